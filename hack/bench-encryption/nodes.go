package main

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/dpbench/benchnet"
	"github.com/trellisnet/trellis/internal/wireguard/strict"
)

// node is one node namespace with its pods.
type node struct {
	*benchnet.Node
	// podCIDR is the node's pod CIDR (routed by the agent's code path,
	// through WireGuard); plainCIDR holds the plaintext pods, routed
	// natively (the route native mode installs).
	podCIDR, plainCIDR netip.Prefix
	// handAddr is the node's address on the hand-built tunnel.
	handAddr netip.Prefix
	pods     map[string]string // kind (enc, plain) -> pod netns name
	podIPs   map[string]string
}

// setupNodes makes the two node namespaces and the plaintext pods' routes.
func (b *bench) setupNodes() error {
	pair, err := benchnet.NewPair("benchwg", "trl-bw", b.tag, b.work, b.o.bin)
	if err != nil {
		return err
	}
	b.pair = pair
	b.onExit(pair.Close)
	for i, bn := range pair.Nodes {
		b.nodes = append(b.nodes, &node{Node: bn,
			podCIDR:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 91, byte(i + 1), 0}), 24),
			plainCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 92, byte(i + 1), 0}), 24),
			handAddr:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 94, 0, byte(i + 1)}), 24),
			pods:      map[string]string{}, podIPs: map[string]string{}})
	}
	for i, n := range b.nodes {
		peer := b.nodes[1-i]
		// The plaintext pods' route: what native mode installs.
		if err := benchnet.Sh("ip", "-n", n.NSName, "route", "add", peer.plainCIDR.String(), "via", peer.IP.String(),
			"dev", benchnet.Uplink, "onlink"); err != nil {
			return err
		}
	}
	return nil
}

// addPods wires one pod per node in its podCIDR (kind enc) or plainCIDR
// (kind plain) with trellis-cni.
func (b *bench) addPods(kind string, mtu int) error {
	for _, n := range b.nodes {
		subnet := n.podCIDR
		if kind == "plain" {
			subnet = n.plainCIDR
		}
		podNS, ip, err := b.pair.AddPod(n.Node, "trl-bwp", kind, subnet, mtu)
		if err != nil {
			return err
		}
		n.pods[kind], n.podIPs[kind] = podNS, ip
	}
	return nil
}

// setupMasquerade installs the agent's masquerade table on both nodes and,
// with -fastpath, the fast path with the uplink as its only uplink device.
// The WireGuard device is no uplink: the fast path never redirects into it
// or out of it, so encrypted pod traffic takes the full path, as on an
// agent node with encryption on.
func (b *bench) setupMasquerade() error {
	var all []netip.Prefix
	local := map[*benchnet.Node][]netip.Prefix{}
	for _, n := range b.nodes {
		all = append(all, n.podCIDR, n.plainCIDR)
		local[n.Node] = []netip.Prefix{n.podCIDR, n.plainCIDR}
	}
	cluster := []netip.Prefix{netip.MustParsePrefix("10.91.0.0/16"), netip.MustParsePrefix("10.92.0.0/16")}
	return b.pair.Masquerade(func(n *benchnet.Node) []netip.Prefix { return local[n] }, cluster, all, b.o.fastPath,
		[]string{benchnet.Uplink})
}

// syncFastPath attaches the fast path to every pod interface (after the
// pods exist).
func (b *bench) syncFastPath() error { return b.pair.SyncFastPath(context.Background()) }

// linkBytes is the received byte counter of dev in node n.
func (n *node) linkBytes(dev string) (uint64, error) {
	l, err := n.Handle.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("%s on %s: %w", dev, n.Name, err)
	}
	return l.Attrs().Statistics.RxBytes, nil
}

// setupStrict installs encryption's strict table on both nodes as the
// agent does with encryptionStrict on: traffic to the encrypted pods'
// CIDRs (cluster CIDR 10.91.0.0/16) may leave only by the WireGuard
// device. The plaintext pods (10.92.0.0/16) and the hand-built tunnel's
// addresses are outside it.
func (b *bench) setupStrict() error {
	var all []netip.Prefix
	for _, n := range b.nodes {
		all = append(all, n.podCIDR)
	}
	for _, n := range b.nodes {
		d := strict.Compute([]netip.Prefix{n.podCIDR}, []netip.Prefix{netip.MustParsePrefix("10.91.0.0/16")}, all,
			config.DefaultWireGuardDevice, 0)
		err := n.NS.Do(func(ns.NetNS) error {
			nft, err := strict.NewNFT()
			if err != nil {
				return err
			}
			return strict.Apply(context.Background(), nft, d)
		})
		if err != nil {
			return fmt.Errorf("strict table on %s: %w", n.Name, err)
		}
	}
	return nil
}
