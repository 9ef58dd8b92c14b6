// Command bench-encryption measures Trellis's WireGuard encryption against
// baselines in the same run, on the same two node namespaces (one veth
// "wire"), pods wired by the real trellis-cni through libcni:
//
//	encrypted pod→pod ÷ a hand-built wireguard-go tunnel node→node (same
//	  engine and module version, configured by hand with wgctrl)   target ≥ 0.95
//	encrypted pod→pod ÷ plaintext pod→pod                           report
//	Gbit per CPU-second of the WireGuard processes, Trellis ÷ hand-built
//	1-byte TCP request/response, encrypted ÷ plaintext, encrypted ÷ hand-built
//
// The Trellis side is the agent's code path: routing.Compute with
// encryption on, netlinkprog.Programmer applying it through
// wgdev.Manager. Each node's WireGuard device runs in a helper process of
// its own in the node's namespace (helper.go), as in an agent, so the CPU
// time of the process doing the crypto is read from /proc/<pid>/stat.
// Each figure is measured -runs times, the sides interleaved (their order
// rotates each round); medians, min–max and the ratio of medians are printed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/internal/dpbench/benchnet"
	"github.com/trellisnet/trellis/internal/routing"
)

type options struct {
	bin      string
	runs     int
	seconds  int
	fastPath bool
	strict   bool
	hold     time.Duration
	cc       string
	engine   string
}

// Ports and devices of the two tunnels.
const (
	handDev     = "hwg0"
	handPort    = 51872
	underlayMTU = 1500
)

func main() {
	var o options
	helperSpec := flag.String("helper", "", "internal: run as a node helper with this spec file")
	flag.StringVar(&o.bin, "bin", "bin", "directory holding trellis-cni")
	flag.IntVar(&o.runs, "runs", 7, "measurements per figure")
	flag.IntVar(&o.seconds, "seconds", 5, "duration of each measurement")
	flag.StringVar(&o.cc, "congestion", "", "TCP congestion control of the iperf3 client (-C); empty: the kernel's default")
	flag.StringVar(&o.engine, "engine", "userspace", "the Trellis device's engine (config wireguard.engine): userspace, kernel or auto")
	flag.BoolVar(&o.strict, "strict", true, "install encryption's strict table (internal/wireguard/strict) on both nodes, as the agent does with encryptionStrict on")
	flag.BoolVar(&o.fastPath, "fastpath", true, "attach the eBPF fast path (internal/fastpath) on both nodes, as the agent does by default")
	flag.DurationVar(&o.hold, "hold", 0, "after measuring, keep the namespaces this long for inspection (ip netns list | grep trl-bw)")
	flag.Parse()
	if *helperSpec != "" {
		if err := runHelper(*helperSpec); err != nil {
			fmt.Fprintln(os.Stderr, "bench-encryption helper:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-encryption:", err)
		os.Exit(1)
	}
}

type bench struct {
	o       options
	tag     string
	work    string
	pair    *benchnet.Pair
	nodes   []*node
	hand    []*helper
	trellis []*helper

	mu      sync.Mutex // guards clean
	clean   []func()
	cleaned bool
}

// onExit registers fn to run at cleanup (last registered, first run).
func (b *bench) onExit(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clean = append(b.clean, fn)
}

// cleanup undoes everything once, also when called from the signal
// handler while run is still going.
func (b *bench) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cleaned {
		return
	}
	b.cleaned = true
	for i := len(b.clean) - 1; i >= 0; i-- {
		b.clean[i]()
	}
}

func run(o options) (err error) {
	b := &bench{o: o, tag: fmt.Sprint(os.Getpid())}
	defer b.cleanup()
	// Interrupted, it still stops the helpers and removes the namespaces.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "bench-encryption: %v, cleaning up\n", s)
		// A measurement in flight would outlive its namespaces; once they
		// are gone, no new one can start.
		killChildren("iperf3")
		b.cleanup()
		killChildren("iperf3")
		os.Exit(130)
	}()
	if b.work, err = os.MkdirTemp("", "trellis-bench-encryption-"); err != nil {
		return err
	}
	b.onExit(func() { os.RemoveAll(b.work) })
	if err := b.setupNodes(); err != nil {
		return err
	}
	if err := b.setupMasquerade(); err != nil {
		return err
	}
	if err := b.addPods("plain", underlayMTU); err != nil {
		return err
	}
	if err := b.addPods("enc", routing.PodMTU(trellisParams(o.engine), underlayMTU)); err != nil {
		return err
	}
	if err := b.syncFastPath(); err != nil {
		return err
	}
	if o.strict {
		if err := b.setupStrict(); err != nil {
			return err
		}
	}
	if err := b.startTunnels(); err != nil {
		return err
	}
	if err := b.warmUp(); err != nil {
		return err
	}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	rows, err := b.measure(logf)
	if err != nil {
		return err
	}
	offl, err := b.offloads()
	if err != nil {
		return err
	}
	status := b.trellisStatus()
	if o.strict {
		status = append(status, b.strictDrops()...)
	}
	b.report(rows, offl, status)
	if o.hold > 0 {
		fmt.Fprintf(os.Stderr, "holding the namespaces for %v\n", o.hold)
		time.Sleep(o.hold)
	}
	return nil
}

func (b *bench) report(rows []dpbench.Row, offloads []string, status []string) {
	fp := "on"
	if !b.o.fastPath {
		fp = "off"
	}
	cc := b.o.cc
	if cc == "" {
		cc = dpbench.DefaultCongestion() + " (the kernel's default)"
	}
	fmt.Printf("\nbench-encryption: %d runs x %ds each, sides interleaved, two node namespaces on one veth, pods by trellis-cni, "+
		"Trellis device engine %s, strict table %s, masquerade table on both nodes, fast path %s, congestion control %s\n\n",
		b.o.runs, b.o.seconds, b.o.engine, onOff(b.o.strict), fp, cc)
	dpbench.Report(os.Stdout, rows)
	fmt.Println("\nper-round ratios (each round's two sides share the machine's drift):")
	for _, r := range rows {
		p := r.Paired()
		fmt.Printf("  %-68s median %.3f (%.3f–%.3f)\n", r.Name, p.Median, p.Min, p.Max)
	}
	fmt.Println("\noffloads negotiated:")
	for _, l := range offloads {
		fmt.Println("  " + l)
	}
	fmt.Println("\nTrellis devices after the run:")
	for _, l := range status {
		fmt.Println("  " + l)
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
