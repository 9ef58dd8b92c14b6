// Package benchnet builds the data-path benchmarks' network: two node
// namespaces joined by one veth ("ul0", 10.0.9.1/24 and 10.0.9.2/24, and
// with EnableIPv6 fd00:9::1/64 and fd00:9::2/64), pods
// wired by the real trellis-cni through libcni, and the agent's masquerade
// table and eBPF fast path on each node (hack/bench-dataplane,
// hack/bench-encryption). It is kept apart from internal/dpbench, whose
// measurements the benchmark image links.
package benchnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/nodesetup"
)

// Uplink is the name of the veth end in each node.
const Uplink = "ul0"

// Node is one node namespace.
type Node struct {
	// Name is the node's name; NSName its namespace's (/run/netns/NSName).
	Name, NSName string
	NS           ns.NetNS
	// IP is the node's address on the uplink (/24).
	IP netip.Addr
	// IP6 is the node's IPv6 address on the uplink (/64), set by
	// EnableIPv6.
	IP6 netip.Addr
	// Handle is a netlink handle in the node's namespace.
	Handle *netlink.Handle
	// FastPath and Programs are set by Masquerade with the fast path on.
	FastPath *fastpath.Controller
	Programs *fastpath.Programs
}

// Path is the node namespace's path.
func (n *Node) Path() string { return "/run/netns/" + n.NSName }

// Pair is the two nodes and what was made for them.
type Pair struct {
	Nodes []*Node
	// Work is a directory for the plugin's state and logs; Bin holds trellis-cni.
	Work, Bin string
	tag       string
	clean     []func()
}

// Sh runs a command and returns its output in the error when it fails.
func Sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewPair makes nodes <name>1 and <name>2 in namespaces <nsPrefix>1-<tag>
// and <nsPrefix>2-<tag>, IP forwarding on, joined by the uplink veth. On
// error, what was made is removed; else Close removes it.
func NewPair(name, nsPrefix, tag, work, bin string) (p *Pair, err error) {
	p = &Pair{Work: work, Bin: bin, tag: tag}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		n := &Node{Name: fmt.Sprintf("%s%d", name, i+1), NSName: fmt.Sprintf("%s%d-%s", nsPrefix, i+1, tag),
			IP: netip.AddrFrom4([4]byte{10, 0, 9, byte(i + 1)})}
		if n.NS, err = cnirunner.NewNetNS(n.NSName); err != nil {
			return p, err
		}
		p.Defer(func() { n.NS.Close(); _ = cnirunner.DeleteNetNS(n.NSName) })
		if err := cnirunner.Sysctl(n.NS, "net/ipv4/ip_forward", "1"); err != nil {
			return p, err
		}
		h, err := vns.GetFromPath(n.NS.Path())
		if err != nil {
			return p, err
		}
		n.Handle, err = netlink.NewHandleAt(h)
		h.Close()
		if err != nil {
			return p, err
		}
		p.Defer(n.Handle.Close)
		p.Nodes = append(p.Nodes, n)
	}
	a, z := p.Nodes[0], p.Nodes[1]
	if err := Sh("ip", "-n", a.NSName, "link", "add", Uplink, "type", "veth", "peer", "name", Uplink, "netns", z.NSName); err != nil {
		return p, err
	}
	for _, n := range p.Nodes {
		if err := Sh("ip", "-n", n.NSName, "addr", "add", n.IP.String()+"/24", "dev", Uplink); err != nil {
			return p, err
		}
		if err := Sh("ip", "-n", n.NSName, "link", "set", Uplink, "up"); err != nil {
			return p, err
		}
	}
	return p, nil
}

// Defer registers fn to run at Close (last registered, first run).
func (p *Pair) Defer(fn func()) { p.clean = append(p.clean, fn) }

// Close removes everything in reverse order.
func (p *Pair) Close() {
	for i := len(p.clean) - 1; i >= 0; i-- {
		p.clean[i]()
	}
	p.clean = nil
}

// EnableIPv6 gives each node its IPv6 address on the uplink
// (fd00:9::<i>/64, usable at once: no duplicate address detection) and turns
// IPv6 forwarding on.
func (p *Pair) EnableIPv6() error {
	for i, n := range p.Nodes {
		n.IP6 = netip.AddrFrom16([16]byte{0xfd, 0, 0, 9, 15: byte(i + 1)})
		if err := cnirunner.Sysctl(n.NS, "net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
		if err := Sh("ip", "-n", n.NSName, "-6", "addr", "add", n.IP6.String()+"/64", "dev", Uplink, "nodad"); err != nil {
			return err
		}
	}
	return nil
}

// AddPod wires a pod in a new namespace <podNSPrefix>-<node>-<kind>-<tag>
// on node n with trellis-cni (ADD through libcni), its address from subnet,
// and returns the namespace's name and the pod's IP. Pods of one node and
// subnet share one IPAM store, so their addresses differ whatever their kind.
func (p *Pair) AddPod(n *Node, podNSPrefix, kind string, subnet netip.Prefix, mtu int) (podNS, ip string, err error) {
	podNS, ips, err := p.AddPodSubnets(n, podNSPrefix, kind, []netip.Prefix{subnet}, mtu)
	if err != nil {
		return "", "", err
	}
	return podNS, ips[0].String(), nil
}

// AddPodSubnets is AddPod with an address from each of subnets (one per
// family: a dual-stack pod); it returns the pod's addresses in the order
// of subnets.
func (p *Pair) AddPodSubnets(n *Node, podNSPrefix, kind string, subnets []netip.Prefix, mtu int) (podNS string, ips []netip.Addr, err error) {
	podNS = fmt.Sprintf("%s-%s-%s-%s", podNSPrefix, n.Name, kind, p.tag)
	if _, err := cnirunner.NewNetNS(podNS); err != nil {
		return "", nil, err
	}
	p.Defer(func() { _ = cnirunner.DeleteNetNS(podNS) })
	var names []string
	for _, s := range subnets {
		names = append(names, s.String())
	}
	store := strings.ReplaceAll(strings.Join(names, "+"), "/", "_")
	list, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "trellis", "plugins": []any{map[string]any{
		"type": "trellis-cni", "mtu": mtu,
		"ipam":    map[string]any{"subnets": names, "dataDir": filepath.Join(p.Work, n.Name+"-ipam-"+store)},
		"logFile": filepath.Join(p.Work, n.Name+"-cni.log"),
	}}})
	r, err := cnirunner.New(list, []string{p.Bin}, filepath.Join(p.Work, n.Name+"-cache"), n.NS)
	if err != nil {
		return "", nil, err
	}
	res, err := r.Add(context.Background(), podNS, "/run/netns/"+podNS, "eth0")
	if err != nil {
		return "", nil, fmt.Errorf("CNI ADD %s: %w", podNS, err)
	}
	p.Defer(func() { _ = r.Del(context.Background(), podNS, "/run/netns/"+podNS, "eth0") })
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return "", nil, fmt.Errorf("CNI ADD %s: %w", podNS, err)
	}
	for _, s := range subnets {
		for _, c := range cur.IPs {
			if a, ok := netip.AddrFromSlice(c.Address.IP); ok && s.Contains(a.Unmap()) {
				ips = append(ips, a.Unmap())
				break
			}
		}
	}
	if len(ips) != len(subnets) {
		return "", nil, fmt.Errorf("CNI ADD %s: result %v lacks an address of one of %v", podNS, cur.IPs, names)
	}
	return podNS, ips, nil
}

// Masquerade installs the agent's masquerade table on both nodes (so
// conntrack runs there, as on every agent node): local gives each node's
// own pod CIDRs, cluster the cluster CIDRs, all every node's pod CIDRs;
// when they hold IPv6 prefixes, the IPv6 table too.
// With fastPath it also loads the fast path on each node, with uplinks as
// its uplink devices, as the agent's fastpath controller does; SyncFastPath
// attaches it.
func (p *Pair) Masquerade(local func(*Node) []netip.Prefix, cluster, all []netip.Prefix, fastPath bool, uplinks []string) error {
	for _, n := range p.Nodes {
		err := n.NS.Do(func(ns.NetNS) error {
			nft, err := masq.NewNFT()
			if err != nil {
				return err
			}
			if err := masq.Apply(context.Background(), nft, masq.Compute(local(n), cluster, all, nil)); err != nil {
				return err
			}
			if !slices.ContainsFunc(local(n), func(p netip.Prefix) bool { return p.Addr().Is6() }) {
				return nil
			}
			nft6, err := masq.NewNFTFamily(knftables.IPv6Family)
			if err != nil {
				return err
			}
			return masq.Apply(context.Background(), nft6, masq.ComputeFamily(knftables.IPv6Family, local(n), cluster, all, nil))
		})
		if err != nil {
			return fmt.Errorf("masquerade table on %s: %w", n.Name, err)
		}
		if !fastPath {
			continue
		}
		progs, err := fastpath.Load()
		if err != nil {
			return err
		}
		p.Defer(progs.Close)
		n.Programs = progs
		n.FastPath, err = fastpath.New(fastpath.Config{Kernel: &fastpath.Kernel{Handle: n.Handle}, Programs: progs,
			Sysctls: nodesetup.NetnsSysctls{NS: n.NS}, Uplinks: func() []string { return uplinks }})
		if err != nil {
			return err
		}
	}
	return nil
}

// SyncFastPath attaches the fast path to every pod interface and uplink
// of each node (a no-op without it).
func (p *Pair) SyncFastPath(ctx context.Context) error {
	for _, n := range p.Nodes {
		if n.FastPath == nil {
			continue
		}
		if err := n.FastPath.Sync(ctx); err != nil {
			return fmt.Errorf("fast path on %s: %w", n.Name, err)
		}
	}
	return nil
}
