// Command bench-dataplane measures the Trellis cross-node datapath against
// baselines in the same run: two node namespaces on one veth "wire", pods
// wired by the real trellis-cni through libcni, routes/VXLAN programmed by
// the agent's own dataplane package (internal/routing + internal/dataplane).
//
//	native pod->pod  vs node->node over the same wire            (throughput)
//	vxlan  pod->pod  vs node->node over a hand-built kernel VXLAN (throughput)
//	1-byte TCP request/response rate pod->pod vs node->node        (native)
//
// each for IPv4 and IPv6 (-family): with IPv6 the pods are dual-stack (an
// address of each family from trellis-cni), the nodes have an IPv6 address
// on the wire, the hand-built VXLAN carries IPv6 too, and the IPv6 rows
// compare IPv6 pod traffic with IPv6 node traffic. VXLAN runs over the IPv4
// underlay for both families.
//
// Each figure is measured -runs times, baseline and Trellis interleaved;
// medians, min-max and the ratio of medians are printed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/internal/dpbench/benchnet"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

type options struct {
	bin      string
	runs     int
	seconds  int
	fastPath bool
	only     string
	hold     time.Duration
	cc       string
	pin      bool
	families string
}

// family reports whether IP family f ("ipv4", "ipv6") is selected by -family.
func (o options) family(f string) bool {
	for _, x := range strings.Split(o.families, ",") {
		if strings.TrimSpace(x) == f {
			return true
		}
	}
	return false
}

// want reports whether figure (native, rr, vxlan) is selected by -only.
func (o options) want(figure string) bool {
	if o.only == "" {
		return true
	}
	for _, f := range strings.Split(o.only, ",") {
		if strings.TrimSpace(f) == figure {
			return true
		}
	}
	return false
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding trellis-cni")
	flag.IntVar(&o.runs, "runs", 3, "measurements per figure")
	flag.IntVar(&o.seconds, "seconds", 4, "duration of each measurement")
	flag.StringVar(&o.only, "only", "", "comma-separated figures to measure: native, rr, vxlan (default all)")
	flag.StringVar(&o.families, "family", "ipv4,ipv6", "comma-separated IP families to measure each figure in: ipv4, ipv6")
	flag.StringVar(&o.cc, "congestion", "default", "comma-separated TCP congestion controls to measure the throughput figures with (iperf3 -C); \"default\" is the kernel's (net.ipv4.tcp_congestion_control)")
	flag.BoolVar(&o.pin, "pin", false, "pin the iperf3 client to CPU 0 and the server to CPU 1")
	flag.DurationVar(&o.hold, "hold", 0, "after measuring, keep the namespaces this long for inspection (ip netns list | grep trl-bd)")
	flag.BoolVar(&o.fastPath, "fastpath", true, "attach the eBPF fast path (internal/fastpath) on both nodes, as the agent does by default")
	flag.Parse()
	if !o.family("ipv4") && !o.family("ipv6") {
		fmt.Fprintln(os.Stderr, "bench-dataplane: -family selects neither ipv4 nor ipv6")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-dataplane:", err)
		os.Exit(1)
	}
}

// node is one node namespace with its pods.
type node struct {
	*benchnet.Node
	podCIDR  netip.Prefix
	podCIDR6 netip.Prefix // with -family ipv6
	dp       *netlinkprog.Programmer
	pods     map[string]string // mode -> pod netns name
	podIPs   map[string]string // mode -> pod IP
	podIPs6  map[string]string // mode -> pod IPv6 address
}

type bench struct {
	o     options
	tag   string
	work  string
	pair  *benchnet.Pair
	nodes []*node
	clean []func()
}

func run(o options) (err error) {
	b := &bench{o: o, tag: fmt.Sprint(os.Getpid())}
	defer func() {
		for i := len(b.clean) - 1; i >= 0; i-- {
			b.clean[i]()
		}
	}()
	if b.work, err = os.MkdirTemp("", "trellis-bench-dataplane-"); err != nil {
		return err
	}
	b.clean = append(b.clean, func() { os.RemoveAll(b.work) })
	if err := b.setupNodes(); err != nil {
		return err
	}
	v6 := o.family("ipv6")
	if v6 {
		if err := b.pair.EnableIPv6(); err != nil {
			return err
		}
	}
	if err := b.setupBaselineVXLAN(); err != nil {
		return err
	}
	if err := b.setupMasquerade(); err != nil {
		return err
	}
	for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN} {
		if err := b.addPods(string(mode), routing.PodMTU(routing.Params{Mode: mode}, 1500)); err != nil {
			return err
		}
	}
	a, z := b.nodes[0], b.nodes[1]
	results := []dpbench.Row{}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	// One pass per selected family; IPv4's rows keep their names, IPv6's
	// are prefixed "IPv6".
	type fam struct {
		prefix, nodeDst, vxlanDst string
		podIPs                    func(*node) map[string]string
	}
	var fams []fam
	if o.family("ipv4") {
		fams = append(fams, fam{"", z.IP.String(), "10.93.0.2", func(n *node) map[string]string { return n.podIPs }})
	}
	if v6 {
		fams = append(fams, fam{"IPv6 ", z.IP6.String(), "fd00:93::2", func(n *node) map[string]string { return n.podIPs6 }})
	}
	if err := b.program(config.ModeNative); err != nil {
		return err
	}
	for _, f := range fams {
		if !o.want("native") {
			break
		}
		rows, err := b.throughput(f.prefix+"native pod->pod ÷ node->node", a.NSName, z.NSName, f.nodeDst,
			a.pods["native"], z.pods["native"], f.podIPs(z)["native"], logf)
		if err != nil {
			return err
		}
		results = append(results, rows...)
	}
	for _, f := range fams {
		if !o.want("rr") {
			break
		}
		r, err := dpbench.Compare(f.prefix+"TCP 1-byte request/response pod ÷ node, per s", 0.90, o.runs, logf,
			func() (float64, error) { return dpbench.RR(netns(a.NSName), netns(z.NSName), f.nodeDst, o.seconds) },
			func() (float64, error) {
				return dpbench.RR(netns(a.pods["native"]), netns(z.pods["native"]), f.podIPs(z)["native"], o.seconds)
			})
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	if o.want("vxlan") {
		if err := b.program(config.ModeVXLAN); err != nil {
			return err
		}
		for _, f := range fams {
			rows, err := b.throughput(f.prefix+"vxlan pod->pod ÷ hand-built VXLAN node->node", a.NSName, z.NSName, f.vxlanDst,
				a.pods["vxlan"], z.pods["vxlan"], f.podIPs(z)["vxlan"], logf)
			if err != nil {
				return err
			}
			results = append(results, rows...)
		}
	}
	report(o, results)
	if o.hold > 0 {
		fmt.Fprintf(os.Stderr, "holding the namespaces for %v\n", o.hold)
		time.Sleep(o.hold)
	}
	for _, n := range b.nodes {
		if n.Programs == nil {
			continue
		}
		st, err := n.Programs.ReadStats()
		if err != nil {
			return err
		}
		fmt.Printf("fast path counters on %s: %v\n", n.Name, st)
		if v6 {
			st6, err := n.Programs.ReadStatsIPv6()
			if err != nil {
				return err
			}
			fmt.Printf("fast path counters on %s, IPv6 only: %v\n", n.Name, st6)
		}
	}
	return nil
}

func (b *bench) setupNodes() error {
	pair, err := benchnet.NewPair("bench", "trl-bd", b.tag, b.work, b.o.bin)
	if err != nil {
		return err
	}
	b.pair = pair
	b.clean = append(b.clean, pair.Close)
	for i, bn := range pair.Nodes {
		n := &node{Node: bn,
			podCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 91, byte(i + 1), 0}), 24),
			dp:      &netlinkprog.Programmer{Handle: bn.Handle, NetnsPath: bn.Path()},
			pods:    map[string]string{}, podIPs: map[string]string{}, podIPs6: map[string]string{}}
		if b.o.family("ipv6") {
			n.podCIDR6 = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x91, 0, byte(i + 1)}), 64)
		}
		b.nodes = append(b.nodes, n)
	}
	return nil
}

// setupBaselineVXLAN builds a plain kernel VXLAN between the nodes by hand
// (over the IPv4 underlay; with IPv6, carrying fd00:93::/64 too).
func (b *bench) setupBaselineVXLAN() error {
	for i, n := range b.nodes {
		peer := b.nodes[1-i]
		cmds := [][]string{
			{"ip", "-n", n.NSName, "link", "add", "hvx0", "type", "vxlan", "id", "77", "dstport", "4790",
				"local", n.IP.String(), "remote", peer.IP.String(), "dev", benchnet.Uplink},
			{"ip", "-n", n.NSName, "link", "set", "hvx0", "mtu", "1450", "up"},
			{"ip", "-n", n.NSName, "addr", "add", fmt.Sprintf("10.93.0.%d/24", i+1), "dev", "hvx0"},
		}
		if b.o.family("ipv6") {
			cmds = append(cmds, []string{"ip", "-n", n.NSName, "-6", "addr", "add", fmt.Sprintf("fd00:93::%d/64", i+1), "dev", "hvx0", "nodad"})
		}
		for _, c := range cmds {
			if err := benchnet.Sh(c...); err != nil {
				return err
			}
		}
	}
	return nil
}

// addPods wires one pod per node with trellis-cni (ADD through libcni),
// dual-stack with -family ipv6.
func (b *bench) addPods(mode string, mtu int) error {
	for _, n := range b.nodes {
		subnets := []netip.Prefix{n.podCIDR}
		if n.podCIDR6.IsValid() {
			subnets = append(subnets, n.podCIDR6)
		}
		podNS, ips, err := b.pair.AddPodSubnets(n.Node, "trl-bdp", mode, subnets, mtu)
		if err != nil {
			return err
		}
		n.pods[mode], n.podIPs[mode] = podNS, ips[0].String()
		if len(ips) > 1 {
			n.podIPs6[mode] = ips[1].String()
		}
	}
	return nil
}

// program applies the agent's desired state for mode on both nodes: the
// routes of both families from internal/routing, as the agent computes
// them for dual-stack nodes (native IPv6 via the peer's IPv6 node address
// on the wire; VXLAN carrying IPv6 over the IPv4 underlay).
func (b *bench) program(mode config.RoutingMode) error {
	cidrs := func(n *node) []netip.Prefix {
		if n.podCIDR6.IsValid() {
			return []netip.Prefix{n.podCIDR, n.podCIDR6}
		}
		return []netip.Prefix{n.podCIDR}
	}
	var peers []routing.Peer
	for _, n := range b.nodes {
		peers = append(peers, routing.Peer{Name: n.Name, NodeIP: n.IP, NodeIP6: n.nodeIP6(), PodCIDRs: cidrs(n)})
	}
	params := routing.Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", Device6: "trellis.vxlan6", VNI: 4096, Port: 4789}}
	for _, n := range b.nodes {
		local := routing.LocalNode{Name: n.Name, NodeIP: n.IP, NodeIP6: n.nodeIP6(), PodCIDRs: cidrs(n)}
		var err error
		if local.Underlay, err = n.dp.Underlay(n.IP); err != nil {
			return err
		}
		if local.NodeIP6.IsValid() {
			if local.Underlay6, err = n.dp.Underlay(local.NodeIP6); err != nil {
				return err
			}
		}
		d := routing.Compute(local, peers, params)
		if len(d.Problems) > 0 {
			return fmt.Errorf("program %s on %s: %v", mode, n.Name, d.Problems)
		}
		if err := n.dp.Apply(context.Background(), d); err != nil {
			return fmt.Errorf("program %s on %s: %w", mode, n.Name, err)
		}
	}
	return b.pair.SyncFastPath(context.Background())
}

// nodeIP6 is the node's IPv6 address on the wire (with -family ipv6;
// invalid otherwise).
func (n *node) nodeIP6() netip.Addr {
	if !n.podCIDR6.IsValid() {
		return netip.Addr{}
	}
	return n.IP6
}

// throughput measures iperf3 node->node (baseline) against pod->pod, once
// per congestion control in -congestion.
func (b *bench) throughput(name, baseNS, baseDstNS, baseDst, podNS, podDstNS, podDst string,
	logf func(string, ...any)) ([]dpbench.Row, error) {
	var rows []dpbench.Row
	def, seen := dpbench.DefaultCongestion(), map[string]bool{}
	for _, cc := range strings.Split(b.o.cc, ",") {
		if cc = strings.TrimSpace(cc); cc == "default" || cc == "" {
			cc = def
		}
		if seen[cc] {
			continue
		}
		seen[cc] = true
		opts := dpbench.IperfOptions{Seconds: b.o.seconds, Pin: b.o.pin, Congestion: cc}
		label := cc
		if cc == def {
			label += ", the kernel's default"
		}
		r, err := dpbench.Compare(fmt.Sprintf("%s, Gbit/s (%s)", name, label), 0.95, b.o.runs, logf,
			func() (float64, error) { return dpbench.IperfWith(netns(baseNS), netns(baseDstNS), baseDst, opts) },
			func() (float64, error) { return dpbench.IperfWith(netns(podNS), netns(podDstNS), podDst, opts) })
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// setupMasquerade installs the agent's masquerade table on both nodes (so
// conntrack runs there, as on every agent node) and, with -fastpath, loads
// the fast path as the agent's fastpath controller does.
func (b *bench) setupMasquerade() error {
	var all []netip.Prefix
	local := map[*benchnet.Node][]netip.Prefix{}
	cluster := []netip.Prefix{netip.MustParsePrefix("10.91.0.0/16")}
	for _, n := range b.nodes {
		all = append(all, n.podCIDR)
		local[n.Node] = []netip.Prefix{n.podCIDR}
		if n.podCIDR6.IsValid() {
			all = append(all, n.podCIDR6)
			local[n.Node] = append(local[n.Node], n.podCIDR6)
		}
	}
	if b.o.family("ipv6") {
		cluster = append(cluster, netip.MustParsePrefix("fd00:91::/32"))
	}
	return b.pair.Masquerade(func(n *benchnet.Node) []netip.Prefix { return local[n] },
		cluster, all, b.o.fastPath, []string{benchnet.Uplink, "trellis.vxlan"})
}

func netns(name string) dpbench.Netns { return dpbench.Netns("/run/netns/" + name) }

func report(o options, rows []dpbench.Row) {
	fp := "on"
	if !o.fastPath {
		fp = "off"
	}
	pin := "not pinned"
	if o.pin {
		pin = "iperf3 client on CPU 0, server on CPU 1"
	}
	fam := "IPv4"
	switch {
	case o.family("ipv4") && o.family("ipv6"):
		fam = "IPv4 and IPv6 (dual-stack pods; routes of both families by internal/routing, VXLAN over the IPv4 underlay)"
	case o.family("ipv6"):
		fam = "IPv6 (dual-stack pods; routes of both families by internal/routing, VXLAN over the IPv4 underlay)"
	}
	fmt.Printf("\nbench-dataplane: %d runs x %ds each, two node namespaces on one veth, pods by trellis-cni, routes by internal/dataplane, masquerade table on both nodes, fast path %s, %s, %s\n\n", o.runs, o.seconds, fp, pin, fam)
	dpbench.Report(os.Stdout, rows)
}
