package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/nodesetup"
)

// node is one node namespace with its pods.
type node struct {
	name, nsName string
	ns           ns.NetNS
	ip           netip.Addr
	// podCIDR is the node's pod CIDR (routed by the agent's code path,
	// through WireGuard); plainCIDR holds the plaintext pods, routed
	// natively (the route native mode installs).
	podCIDR, plainCIDR netip.Prefix
	// handAddr is the node's address on the hand-built tunnel.
	handAddr netip.Prefix
	nl       *netlink.Handle
	fp       *fastpath.Controller
	progs    *fastpath.Programs
	pods     map[string]string // kind (enc, plain) -> pod netns name
	podIPs   map[string]string
}

func (n *node) path() string { return "/run/netns/" + n.nsName }

func sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupNodes makes two node namespaces joined by one veth ("ul0").
func (b *bench) setupNodes() error {
	for i := 0; i < 2; i++ {
		n := &node{name: fmt.Sprintf("benchwg%d", i+1), nsName: fmt.Sprintf("trl-bw%d-%s", i+1, b.tag),
			ip:        netip.AddrFrom4([4]byte{10, 0, 9, byte(i + 1)}),
			podCIDR:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 91, byte(i + 1), 0}), 24),
			plainCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 92, byte(i + 1), 0}), 24),
			handAddr:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 94, 0, byte(i + 1)}), 24),
			pods:      map[string]string{}, podIPs: map[string]string{}}
		var err error
		if n.ns, err = cnirunner.NewNetNS(n.nsName); err != nil {
			return err
		}
		b.clean = append(b.clean, func() { n.ns.Close(); _ = cnirunner.DeleteNetNS(n.nsName) })
		if err := cnirunner.Sysctl(n.ns, "net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
		h, err := vns.GetFromPath(n.ns.Path())
		if err != nil {
			return err
		}
		nh, err := netlink.NewHandleAt(h)
		h.Close()
		if err != nil {
			return err
		}
		b.clean = append(b.clean, nh.Close)
		n.nl = nh
		b.nodes = append(b.nodes, n)
	}
	a, z := b.nodes[0], b.nodes[1]
	if err := sh("ip", "-n", a.nsName, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", z.nsName); err != nil {
		return err
	}
	for i, n := range b.nodes {
		peer := b.nodes[1-i]
		for _, c := range [][]string{
			{"ip", "-n", n.nsName, "addr", "add", n.ip.String() + "/24", "dev", "ul0"},
			{"ip", "-n", n.nsName, "link", "set", "ul0", "up"},
			// The plaintext pods' route: what native mode installs.
			{"ip", "-n", n.nsName, "route", "add", peer.plainCIDR.String(), "via", peer.ip.String(), "dev", "ul0", "onlink"},
		} {
			if err := sh(c...); err != nil {
				return err
			}
		}
	}
	return nil
}

// addPods wires one pod per node in subnet (podCIDR or plainCIDR) with
// trellis-cni (ADD through libcni).
func (b *bench) addPods(kind string, mtu int) error {
	for _, n := range b.nodes {
		subnet := n.podCIDR
		if kind == "plain" {
			subnet = n.plainCIDR
		}
		podNS := fmt.Sprintf("trl-bwp-%s-%s-%s", n.name, kind, b.tag)
		if _, err := cnirunner.NewNetNS(podNS); err != nil {
			return err
		}
		b.clean = append(b.clean, func() { _ = cnirunner.DeleteNetNS(podNS) })
		list, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "trellis", "plugins": []any{map[string]any{
			"type": "trellis-cni", "mtu": mtu,
			"ipam":    map[string]any{"subnets": []string{subnet.String()}, "dataDir": filepath.Join(b.work, n.name+"-"+kind+"-ipam")},
			"logFile": filepath.Join(b.work, n.name+"-cni.log"),
		}}})
		r, err := cnirunner.New(list, []string{b.o.bin}, filepath.Join(b.work, n.name+"-"+kind+"-cache"), n.ns)
		if err != nil {
			return err
		}
		res, err := r.Add(context.Background(), podNS, "/run/netns/"+podNS, "eth0")
		if err != nil {
			return fmt.Errorf("CNI ADD %s: %w", podNS, err)
		}
		b.clean = append(b.clean, func() { _ = r.Del(context.Background(), podNS, "/run/netns/"+podNS, "eth0") })
		cur, err := current.NewResultFromResult(res)
		if err != nil || len(cur.IPs) == 0 {
			return fmt.Errorf("CNI ADD %s: no IP in result (%v)", podNS, err)
		}
		n.pods[kind], n.podIPs[kind] = podNS, cur.IPs[0].Address.IP.String()
	}
	return nil
}

// setupMasquerade installs the agent's masquerade table on both nodes (so
// conntrack runs there, as on every agent node) and, with -fastpath, loads
// and attaches the fast path as the agent's fastpath controller does. The
// WireGuard device is no uplink: the fast path never redirects into it or
// out of it, so encrypted pod traffic takes the full path.
func (b *bench) setupMasquerade() error {
	var all []netip.Prefix
	for _, n := range b.nodes {
		all = append(all, n.podCIDR, n.plainCIDR)
	}
	cluster := []netip.Prefix{netip.MustParsePrefix("10.91.0.0/16"), netip.MustParsePrefix("10.92.0.0/16")}
	for _, n := range b.nodes {
		err := n.ns.Do(func(ns.NetNS) error {
			nft, err := masq.NewNFT()
			if err != nil {
				return err
			}
			return masq.Apply(context.Background(), nft, masq.Compute([]netip.Prefix{n.podCIDR, n.plainCIDR}, cluster, all, nil))
		})
		if err != nil {
			return fmt.Errorf("masquerade table on %s: %w", n.name, err)
		}
		if !b.o.fastPath {
			continue
		}
		progs, err := fastpath.Load()
		if err != nil {
			return err
		}
		b.clean = append(b.clean, progs.Close)
		n.progs = progs
		n.fp, err = fastpath.New(fastpath.Config{Kernel: &fastpath.Kernel{Handle: n.nl}, Programs: progs,
			Sysctls: nodesetup.NetnsSysctls{NS: n.ns}, Uplinks: func() []string { return []string{"ul0"} }})
		if err != nil {
			return err
		}
	}
	return nil
}

// syncFastPath attaches the fast path to every pod interface (after the
// pods exist).
func (b *bench) syncFastPath() error {
	for _, n := range b.nodes {
		if n.fp == nil {
			continue
		}
		if err := n.fp.Sync(context.Background()); err != nil {
			return fmt.Errorf("fast path on %s: %w", n.name, err)
		}
	}
	return nil
}

// linkBytes is the received byte counter of dev in node n.
func (n *node) linkBytes(dev string) (uint64, error) {
	l, err := n.nl.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("%s on %s: %w", dev, n.name, err)
	}
	return l.Attrs().Statistics.RxBytes, nil
}
