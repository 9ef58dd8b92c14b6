package cni

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/podlink"
)

// The dataplane gate. On a node the agent manages, its conflist sets
// requireDataplane: the plugin then wires a pod only while the node state
// file says the agent's base dataplane (policy and anti-spoofing) is in
// place, programmed during this boot, and every nftables table it names
// exists now. After a reboot (the state file survives, the kernel's tables
// do not), while the agent cannot start or its policy controller fails, and
// after a foreign `nft flush ruleset`, ADD fails with CNI error 11 (try
// again later; the runtime retries the sandbox) instead of starting a pod
// without isolation. Used alone (no requireDataplane) the plugin does not
// look.

// dataplaneReady returns why pods cannot be wired yet, or nil. st is the
// node state file's content (nil when the configuration does not need it).
func (c *NetConf) dataplaneReady(st *podlink.NodeState, tableExists func(podlink.NFTable) (bool, error)) error {
	if !c.RequireDataplane {
		return nil
	}
	dp := st.Dataplane
	if dp == nil {
		why := "the agent has not put this node's policy and anti-spoofing base in place"
		if !st.Ready && st.Reason != "" {
			why += " (" + st.Reason + ")"
		}
		return errors.New(why)
	}
	boot, err := podlink.BootID()
	if err != nil {
		return err
	}
	if dp.BootID != boot {
		return fmt.Errorf("the policy and anti-spoofing base was programmed in another boot (%s, this boot is %s): waiting for the agent", dp.BootID, boot)
	}
	for _, t := range dp.Tables {
		ok, err := tableExists(t)
		if err != nil {
			return fmt.Errorf("look up nftables table %s: %w", t, err)
		}
		if !ok {
			return fmt.Errorf("nftables table %s is missing (deleted or flushed): waiting for the agent to restore it", t)
		}
	}
	return nil
}

// nftFamilies are nftables' family numbers (NFPROTO_*).
var nftFamilies = map[string]uint8{"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}

// Message types and attributes of nf_tables (linux/netfilter/nf_tables.h).
const (
	nfnlSubsysNFTables = 10
	nftMsgNewTable     = 0
	nftMsgGetTable     = 1
	nftaTableName      = 1
)

// nftTableExists asks the kernel, over netlink in the calling thread's
// network namespace, whether the table exists: one GETTABLE request, no nft
// binary (the host may have none) and no nftables library in the plugin.
func nftTableExists(t podlink.NFTable) (bool, error) {
	fam, ok := nftFamilies[t.Family]
	if !ok {
		return false, fmt.Errorf("unknown nftables family %q", t.Family)
	}
	req := nl.NewNetlinkRequest(nfnlSubsysNFTables<<8|nftMsgGetTable, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nftaTableName, nl.ZeroTerminated(t.Name)))
	_, err := req.Execute(unix.NETLINK_NETFILTER, nfnlSubsysNFTables<<8|nftMsgNewTable)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.ENOENT):
		return false, nil
	}
	return false, err
}
