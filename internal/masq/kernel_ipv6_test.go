//go:build kernel

package masq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/netnstest"
)

// An IPv6 pod wired by trellis-cni in node namespace a: its traffic to an
// address outside the cluster leaves a masqueraded to a's address, as the
// peer b sees it; its traffic to another node's pod keeps the pod's
// address. Without the table (control) the outside peer sees the pod.
func TestKernelMasqueradeIPv6Pod(t *testing.T) {
	a, b := netnstest.NewLinkedNodes(t, "fd00:1::11/64", "fd00:1::12/64")
	waitNotTentative(t, a, "ul0")
	waitNotTentative(t, b, "ul0")
	b.Configure(t, "lo", "fd00:10:244:2::5/128")
	route(t, a, "fd00:10:244:2::/64", "fd00:1::12")
	route(t, b, "fd00:10:244:1::/64", "fd00:1::11")

	podNS, podAddr := wirePod(t, a, "fd00:10:244:1::/120")
	outside := listen6(t, b.NS, "[fd00:1::12]:7200")
	remotePod := listen6(t, b.NS, "[fd00:10:244:2::5]:7300")
	pod := listen6(t, podNS, "[::]:7100")

	// Its own source port: the flow of the checks below starts under the table.
	control := listen6(t, podNS, "[::]:7101")
	if got := sourceSeen(t, control, outside); got != podAddr.String() {
		t.Fatalf("control, no masquerade table: outside saw %s, want the pod %s", got, podAddr)
	}

	d := ComputeFamily(knftables.IPv6Family, pfx("fd00:10:244:1::/64"), pfx("fd00:10:244::/56"), pfx("fd00:10:244:1::/64", "fd00:10:244:2::/64"), nil)
	err := a.NS.Do(func(ns.NetNS) error {
		nft, err := NewNFTFamily(knftables.IPv6Family)
		if err != nil {
			return err
		}
		// Twice: the second run must be a no-op, not a failure.
		if err := Apply(context.Background(), nft, d); err != nil {
			return err
		}
		return Apply(context.Background(), nft, d)
	})
	if err != nil {
		t.Fatalf("program the IPv6 table in the node namespace: %v", err)
	}
	if got := sourceSeen(t, pod, outside); got != "fd00:1::11" {
		t.Errorf("IPv6 pod -> outside the cluster seen from %s, want the node address fd00:1::11", got)
	}
	if got := sourceSeen(t, pod, remotePod); got != podAddr.String() {
		t.Errorf("IPv6 pod -> another node's pod seen from %s, want the pod address %s (no masquerade inside the cluster)", got, podAddr)
	}
	out, err := a.Exec("nft", "list", "table", "ip6", TableName)
	if err != nil || !strings.Contains(out, "ip6 saddr @pod-sources") {
		t.Fatalf("nft list table ip6 %s: %v\n%s", TableName, err, out)
	}
	if _, err := a.Exec("nft", "list", "table", "ip", TableName); err == nil {
		t.Error("programming IPv6 masquerade created the IPv4 table")
	}
	t.Logf("IPv6 table after two syncs:\n%s", out)
}

// wirePod builds trellis-cni and wires one pod into node n from subnet
// through libcni; it returns the pod's namespace and address. DEL and the
// namespace's removal run at cleanup.
func wirePod(t *testing.T, n *netnstest.Node, subnet string) (ns.NetNS, netip.Addr) {
	t.Helper()
	bin := t.TempDir()
	if _, err := cnirunner.BuildPlugin(bin); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	conflist, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "masq-test", "plugins": []any{map[string]any{
		"type": "trellis-cni", "mtu": 1400, "ipam": map[string]any{"subnets": []string{subnet}, "dataDir": filepath.Join(state, "ipam")},
		"nodeStateFile": filepath.Join(state, "node-state.json"), "logFile": filepath.Join(state, "cni.log"),
	}}})
	r, err := cnirunner.New(conflist, []string{bin}, t.TempDir(), n.NS)
	if err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, 4)
	_, _ = rand.Read(rnd)
	name := "trl-mpod-" + hex.EncodeToString(rnd)
	podNS, err := cnirunner.NewNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Del(context.Background(), "ctr-"+name, podNS.Path(), "eth0")
		podNS.Close()
		_ = cnirunner.DeleteNetNS(name)
	})
	res, err := r.Add(context.Background(), "ctr-"+name, podNS.Path(), "eth0")
	if err != nil {
		logs, _ := os.ReadFile(filepath.Join(state, "cni.log"))
		t.Fatalf("ADD: %v\n%s", err, logs)
	}
	var out struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	data, _ := json.Marshal(res)
	if err := json.Unmarshal(data, &out); err != nil || len(out.IPs) != 1 {
		t.Fatalf("ADD result %s: %v", data, err)
	}
	p, err := netip.ParsePrefix(out.IPs[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	return podNS, p.Addr()
}

func listen6(t *testing.T, n ns.NetNS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	}); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitNotTentative waits (up to 5 s) until link's IPv6 addresses in n have
// passed duplicate address detection: a tentative address is no source,
// masquerade's included.
func waitNotTentative(t *testing.T, n *netnstest.Node, link string) {
	t.Helper()
	l, err := n.Handle.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		addrs, err := n.Handle.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		tentative := false
		for _, a := range addrs {
			tentative = tentative || a.Flags&unix.IFA_F_TENTATIVE != 0
		}
		if !tentative {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still has tentative addresses: %v", link, addrs)
		}
	}
}
