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
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/nodesetup"
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

// node is one node namespace with its pod.
type node struct {
	name, nsName string
	ns           ns.NetNS
	ip           netip.Addr
	podCIDR      netip.Prefix
	dp           *netlinkprog.Programmer
	nl           *netlink.Handle
	fp           *fastpath.Controller
	progs        *fastpath.Programs
	pods         map[string]string // mode -> pod netns name
	podIPs       map[string]string // mode -> pod IP
}

type bench struct {
	o     options
	tag   string
	work  string
	nodes []*node
	clean []func()
}

func sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
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
		rows, err := b.throughput("native pod->pod ÷ node->node", a.nsName, z.nsName, z.ip.String(),
			a.pods["native"], z.pods["native"], z.podIPs["native"], logf)
		if err != nil {
			return err
		}
		results = append(results, rows...)
	}
	if o.want("rr") {
		r, err := dpbench.Compare("TCP 1-byte request/response pod ÷ node, per s", 0.90, o.runs, logf,
			func() (float64, error) { return dpbench.RR(netns(a.nsName), netns(z.nsName), z.ip.String(), o.seconds) },
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
		rows, err := b.throughput("vxlan pod->pod ÷ hand-built VXLAN node->node", a.nsName, z.nsName, "10.93.0.2",
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
		if n.progs == nil {
			continue
		}
		st, err := n.progs.ReadStats()
		if err != nil {
			return err
		}
		fmt.Printf("fast path counters on %s: %v\n", n.name, st)
	}
	return nil
}

func (b *bench) setupNodes() error {
	for i := 0; i < 2; i++ {
		n := &node{name: fmt.Sprintf("bench%d", i+1), nsName: fmt.Sprintf("trl-bd%d-%s", i+1, b.tag),
			ip:      netip.AddrFrom4([4]byte{10, 0, 9, byte(i + 1)}),
			podCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 91, byte(i + 1), 0}), 24),
			pods:    map[string]string{}, podIPs: map[string]string{}}
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
		n.dp = &netlinkprog.Programmer{Handle: nh, NetnsPath: n.ns.Path()}
		n.nl = nh
		b.nodes = append(b.nodes, n)
	}
	a, z := b.nodes[0], b.nodes[1]
	if err := sh("ip", "-n", a.nsName, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", z.nsName); err != nil {
		return err
	}
	for _, n := range b.nodes {
		if err := sh("ip", "-n", n.nsName, "addr", "add", n.ip.String()+"/24", "dev", "ul0"); err != nil {
			return err
		}
		if err := sh("ip", "-n", n.nsName, "link", "set", "ul0", "up"); err != nil {
			return err
		}
	}
	return nil
}

// setupBaselineVXLAN builds a plain kernel VXLAN between the nodes by hand.
func (b *bench) setupBaselineVXLAN() error {
	for i, n := range b.nodes {
		peer := b.nodes[1-i]
		cmds := [][]string{
			{"ip", "-n", n.nsName, "link", "add", "hvx0", "type", "vxlan", "id", "77", "dstport", "4790",
				"local", n.ip.String(), "remote", peer.ip.String(), "dev", "ul0"},
			{"ip", "-n", n.nsName, "link", "set", "hvx0", "mtu", "1450", "up"},
			{"ip", "-n", n.nsName, "addr", "add", fmt.Sprintf("10.93.0.%d/24", i+1), "dev", "hvx0"},
		}
		for _, c := range cmds {
			if err := sh(c...); err != nil {
				return err
			}
		}
	}
	return nil
}

// addPods wires one pod per node with trellis-cni (ADD through libcni).
func (b *bench) addPods(mode string, mtu int) error {
	for _, n := range b.nodes {
		podNS := fmt.Sprintf("trl-bdp-%s-%s-%s", n.name, mode, b.tag)
		if _, err := cnirunner.NewNetNS(podNS); err != nil {
			return err
		}
		b.clean = append(b.clean, func() { _ = cnirunner.DeleteNetNS(podNS) })
		list, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "trellis", "plugins": []any{map[string]any{
			"type": "trellis-cni", "mtu": mtu,
			"ipam":    map[string]any{"subnets": []string{n.podCIDR.String()}, "dataDir": filepath.Join(b.work, n.name+"-ipam")},
			"logFile": filepath.Join(b.work, n.name+"-cni.log"),
		}}})
		r, err := cnirunner.New(list, []string{b.o.bin}, filepath.Join(b.work, n.name+"-cache"), n.ns)
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
		n.pods[mode], n.podIPs[mode] = podNS, cur.IPs[0].Address.IP.String()
	}
	return nil
}

// program applies the agent's desired state for mode on both nodes.
func (b *bench) program(mode config.RoutingMode) error {
	var peers []routing.Peer
	for _, n := range b.nodes {
		peers = append(peers, routing.Peer{Name: n.name, NodeIP: n.ip, PodCIDRs: []netip.Prefix{n.podCIDR}})
	}
	for _, n := range b.nodes {
		ul, err := n.dp.Underlay(n.ip)
		if err != nil {
			return err
		}
		local := routing.LocalNode{Name: n.name, NodeIP: n.ip, Underlay: ul, PodCIDRs: []netip.Prefix{n.podCIDR}}
		d := routing.Compute(local, peers, routing.Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 4096, Port: 4789}})
		if err := n.dp.Apply(context.Background(), d); err != nil {
			return fmt.Errorf("program %s on %s: %w", mode, n.name, err)
		}
		if n.fp != nil {
			if err := n.fp.Sync(context.Background()); err != nil {
				return fmt.Errorf("fast path on %s: %w", n.name, err)
			}
		}
	}
	return nil
}

// throughput measures iperf3 node->node (baseline) against pod->pod, once
// per congestion control in -congestion.
func (b *bench) throughput(name, baseNS, baseDstNS, baseDst, podNS, podDstNS, podDst string,
	logf func(string, ...any)) ([]dpbench.Row, error) {
	var rows []dpbench.Row
	def, seen := defaultCC(), map[string]bool{}
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

// defaultCC is the kernel's default TCP congestion control (new network
// namespaces, such as the bench's, inherit it).
func defaultCC() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// setupMasquerade installs the agent's masquerade table on both nodes (so
// conntrack runs there, as on every agent node) and, with -fastpath, loads
// and attaches the fast path as the agent's fastpath controller does.
func (b *bench) setupMasquerade() error {
	var all []netip.Prefix
	for _, n := range b.nodes {
		all = append(all, n.podCIDR)
	}
	cluster := []netip.Prefix{netip.MustParsePrefix("10.91.0.0/16")}
	for _, n := range b.nodes {
		err := n.ns.Do(func(ns.NetNS) error {
			nft, err := masq.NewNFT()
			if err != nil {
				return err
			}
			return masq.Apply(context.Background(), nft, masq.Compute([]netip.Prefix{n.podCIDR}, cluster, all, nil))
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
			Sysctls: nodesetup.NetnsSysctls{NS: n.ns}, Uplinks: func() []string { return []string{"ul0", "trellis.vxlan"} }})
		if err != nil {
			return err
		}
	}
	return nil
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
