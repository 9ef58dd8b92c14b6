// Command bench-dataplane measures the Trellis cross-node datapath against
// baselines in the same run: two node namespaces on one veth "wire", pods
// wired by the real trellis-cni through libcni, routes/VXLAN programmed by
// the agent's own dataplane package (internal/routing + internal/dataplane).
//
//	native pod->pod  vs node->node over the same wire            (throughput)
//	vxlan  pod->pod  vs node->node over a hand-built kernel VXLAN (throughput)
//	1-byte TCP request/response rate pod->pod vs node->node        (native)
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
	flag.StringVar(&o.cc, "congestion", "default", "comma-separated TCP congestion controls to measure the throughput figures with (iperf3 -C); \"default\" is the kernel's (net.ipv4.tcp_congestion_control)")
	flag.BoolVar(&o.pin, "pin", false, "pin the iperf3 client to CPU 0 and the server to CPU 1")
	flag.DurationVar(&o.hold, "hold", 0, "after measuring, keep the namespaces this long for inspection (ip netns list | grep trl-bd)")
	flag.BoolVar(&o.fastPath, "fastpath", true, "attach the eBPF fast path (internal/fastpath) on both nodes, as the agent does by default")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-dataplane:", err)
		os.Exit(1)
	}
}

// node is one node namespace with its pods.
type node struct {
	*benchnet.Node
	podCIDR netip.Prefix
	dp      *netlinkprog.Programmer
	pods    map[string]string // mode -> pod netns name
	podIPs  map[string]string // mode -> pod IP
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
	if err := b.program(config.ModeNative); err != nil {
		return err
	}
	if o.want("native") {
		rows, err := b.throughput("native pod->pod ÷ node->node", a.NSName, z.NSName, z.IP.String(),
			a.pods["native"], z.pods["native"], z.podIPs["native"], logf)
		if err != nil {
			return err
		}
		results = append(results, rows...)
	}
	if o.want("rr") {
		r, err := dpbench.Compare("TCP 1-byte request/response pod ÷ node, per s", 0.90, o.runs, logf,
			func() (float64, error) { return dpbench.RR(netns(a.NSName), netns(z.NSName), z.IP.String(), o.seconds) },
			func() (float64, error) {
				return dpbench.RR(netns(a.pods["native"]), netns(z.pods["native"]), z.podIPs["native"], o.seconds)
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
		rows, err := b.throughput("vxlan pod->pod ÷ hand-built VXLAN node->node", a.NSName, z.NSName, "10.93.0.2",
			a.pods["vxlan"], z.pods["vxlan"], z.podIPs["vxlan"], logf)
		if err != nil {
			return err
		}
		results = append(results, rows...)
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
		b.nodes = append(b.nodes, &node{Node: bn,
			podCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 91, byte(i + 1), 0}), 24),
			dp:      &netlinkprog.Programmer{Handle: bn.Handle, NetnsPath: bn.Path()},
			pods:    map[string]string{}, podIPs: map[string]string{}})
	}
	return nil
}

// setupBaselineVXLAN builds a plain kernel VXLAN between the nodes by hand.
func (b *bench) setupBaselineVXLAN() error {
	for i, n := range b.nodes {
		peer := b.nodes[1-i]
		cmds := [][]string{
			{"ip", "-n", n.NSName, "link", "add", "hvx0", "type", "vxlan", "id", "77", "dstport", "4790",
				"local", n.IP.String(), "remote", peer.IP.String(), "dev", benchnet.Uplink},
			{"ip", "-n", n.NSName, "link", "set", "hvx0", "mtu", "1450", "up"},
			{"ip", "-n", n.NSName, "addr", "add", fmt.Sprintf("10.93.0.%d/24", i+1), "dev", "hvx0"},
		}
		for _, c := range cmds {
			if err := benchnet.Sh(c...); err != nil {
				return err
			}
		}
	}
	return nil
}

// addPods wires one pod per node with trellis-cni (ADD through libcni).
func (b *bench) addPods(mode string, mtu int) error {
	for _, n := range b.nodes {
		podNS, ip, err := b.pair.AddPod(n.Node, "trl-bdp", mode, n.podCIDR, mtu)
		if err != nil {
			return err
		}
		n.pods[mode], n.podIPs[mode] = podNS, ip
	}
	return nil
}

// program applies the agent's desired state for mode on both nodes.
func (b *bench) program(mode config.RoutingMode) error {
	var peers []routing.Peer
	for _, n := range b.nodes {
		peers = append(peers, routing.Peer{Name: n.Name, NodeIP: n.IP, PodCIDRs: []netip.Prefix{n.podCIDR}})
	}
	for _, n := range b.nodes {
		ul, err := n.dp.Underlay(n.IP)
		if err != nil {
			return err
		}
		local := routing.LocalNode{Name: n.Name, NodeIP: n.IP, Underlay: ul, PodCIDRs: []netip.Prefix{n.podCIDR}}
		d := routing.Compute(local, peers, routing.Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 4096, Port: 4789}})
		if err := n.dp.Apply(context.Background(), d); err != nil {
			return fmt.Errorf("program %s on %s: %w", mode, n.Name, err)
		}
	}
	return b.pair.SyncFastPath(context.Background())
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
	for _, n := range b.nodes {
		all = append(all, n.podCIDR)
		local[n.Node] = []netip.Prefix{n.podCIDR}
	}
	return b.pair.Masquerade(func(n *benchnet.Node) []netip.Prefix { return local[n] },
		[]netip.Prefix{netip.MustParsePrefix("10.91.0.0/16")}, all, b.o.fastPath, []string{benchnet.Uplink, "trellis.vxlan"})
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
	fmt.Printf("\nbench-dataplane: %d runs x %ds each, two node namespaces on one veth, pods by trellis-cni, routes by internal/dataplane, masquerade table on both nodes, fast path %s, %s\n\n", o.runs, o.seconds, fp, pin)
	dpbench.Report(os.Stdout, rows)
}
