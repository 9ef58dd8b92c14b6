// Package dpbench holds the measurements shared by the dataplane
// benchmarks: iperf3 throughput and a 1-byte TCP request/response loop
// between network namespaces, and the side-by-side report.
package dpbench

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Netns is a network namespace given by its path (/run/netns/X, /proc/PID/ns/net).
type Netns string

func (n Netns) cmd(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + string(n), "--"}, args...)...)
}

// Iperf runs an iperf3 TCP test of secs seconds from src to dst (an
// address in netns dstNS) and returns Gbit/s.
func Iperf(src, dstNS Netns, dst string, secs int) (float64, error) {
	return IperfWith(src, dstNS, dst, IperfOptions{Seconds: secs})
}

// IperfOptions tune an iperf3 run.
type IperfOptions struct {
	Seconds int
	// Congestion is the client's TCP congestion control (iperf3 -C); ""
	// keeps the kernel's default (net.ipv4.tcp_congestion_control).
	Congestion string
	// Pin puts the client on CPU 0 and the server on CPU 1 (iperf3 -A).
	Pin bool
}

// IperfWith is Iperf with options.
func IperfWith(src, dstNS Netns, dst string, o IperfOptions) (float64, error) {
	srvArgs := []string{"iperf3", "-s", "-1", "-B", dst, "-p", "5299"}
	cliArgs := IperfClientArgs(dst, 5299, o)
	if o.Pin {
		srvArgs, cliArgs = append(srvArgs, "-A", "1"), append(cliArgs, "-A", "0")
	}
	srv := dstNS.cmd(srvArgs...)
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("start iperf3 server: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var out []byte
	var err error
	for try := 0; try < 20; try++ {
		time.Sleep(100 * time.Millisecond)
		out, err = src.cmd(cliArgs...).Output()
		if err == nil {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3 client to %s: %v: %s", dst, err, out)
	}
	return ParseIperf(out)
}

// IperfClientArgs is the iperf3 client command line (JSON output) for a
// test of o.Seconds to dst:port.
func IperfClientArgs(dst string, port int, o IperfOptions) []string {
	args := []string{"iperf3", "-c", dst, "-p", fmt.Sprint(port), "-t", fmt.Sprint(o.Seconds), "-J"}
	if o.Congestion != "" {
		args = append(args, "-C", o.Congestion)
	}
	return args
}

// ParseIperf reads an iperf3 client's JSON report (-J) and returns the
// received throughput in Gbit/s. A report carrying an error, or no
// received bytes, is an error.
func ParseIperf(out []byte) (float64, error) {
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, fmt.Errorf("parse iperf3 output: %w", err)
	}
	if res.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", res.Error)
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		return 0, fmt.Errorf("iperf3 reported no received data")
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

// RR counts 1-byte TCP request/response round trips per second from src
// to an echo server bound to dst (an IPv4 or IPv6 address) inside dstNS.
func RR(src, dstNS Netns, dst string, secs int) (float64, error) {
	network := "tcp4"
	if a, err := netip.ParseAddr(dst); err == nil && a.Is6() && !a.Is4In6() {
		network = "tcp6"
	}
	var ln net.Listener
	if err := ns.WithNetNSPath(string(dstNS), func(ns.NetNS) error {
		var err error
		ln, err = net.Listen(network, net.JoinHostPort(dst, "0"))
		return err
	}); err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() { _ = Echo(ln) }()
	var c net.Conn
	if err := ns.WithNetNSPath(string(src), func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout(network, ln.Addr().String(), 3*time.Second)
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	return RRLoop(c, time.Duration(secs)*time.Second)
}

// Echo serves the request/response loop on ln: every connection gets its
// bytes back, until ln is closed.
func Echo(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// RRLoop sends one byte on c and waits for it to come back, again and
// again for d, and returns the round trips per second.
func RRLoop(c net.Conn, d time.Duration) (float64, error) {
	buf := []byte{1}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// DefaultCongestion is the kernel's default TCP congestion control (new
// network namespaces, such as the benchmarks', inherit it); "?" when it
// cannot be read.
func DefaultCongestion() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// Row is one figure: baseline and Trellis samples and the target ratio.
type Row struct {
	Name       string
	Target     float64
	Base, Subj []float64
}

// Compare measures base and subj alternately, runs times each, logging each run.
func Compare(name string, target float64, runs int, logf func(string, ...any), base, subj func() (float64, error)) (Row, error) {
	r := Row{Name: name, Target: target}
	var err error
	r.Base, r.Subj, err = Interleave(runs, base, subj, func(i int, b, s float64) {
		logf("  %s run %d: baseline %.3g trellis %.3g", name, i+1, b, s)
	})
	if err != nil {
		return r, fmt.Errorf("%s: %w", name, err)
	}
	return r, nil
}

// Interleave measures a then b, runs times, so that drift on a shared
// machine lands on both sides alike; each pair is passed to done. The
// first error stops it, naming the side ("first"/"second") and the run.
func Interleave(runs int, a, b func() (float64, error), done func(run int, a, b float64)) (as, bs []float64, err error) {
	for i := 0; i < runs; i++ {
		va, err := a()
		if err != nil {
			return as, bs, fmt.Errorf("run %d, first side: %w", i+1, err)
		}
		as = append(as, va)
		vb, err := b()
		if err != nil {
			return as, bs, fmt.Errorf("run %d, second side: %w", i+1, err)
		}
		bs = append(bs, vb)
		if done != nil {
			done(i, va, vb)
		}
	}
	return as, bs, nil
}

// Paired summarises the per-round ratios Subj[i]/Base[i] of an
// interleaved row: on a machine whose speed drifts, each round's two sides
// share the drift, so the ratios spread less than the two sides do.
func (r Row) Paired() Stats {
	var v []float64
	for i := range min(len(r.Base), len(r.Subj)) {
		if r.Base[i] != 0 {
			v = append(v, r.Subj[i]/r.Base[i])
		}
	}
	return Summarise(v)
}

// Stats summarise samples: median, minimum and maximum.
type Stats struct {
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

// Summarise returns the Stats of v (all zero for no samples).
func Summarise(v []float64) Stats {
	if len(v) == 0 {
		return Stats{}
	}
	return Stats{Median: Median(v), Min: slices.Min(v), Max: slices.Max(v), Samples: slices.Clone(v)}
}

// Median of v.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func span(v []float64) string { return fmt.Sprintf("%.3g–%.3g", slices.Min(v), slices.Max(v)) }

// Report writes the side-by-side table. A row with Target 0 has no
// target: its ratio is reported only.
func Report(w io.Writer, rows []Row) {
	width := 56
	for _, r := range rows {
		width = max(width, utf8.RuneCountInString(r.Name))
	}
	fmt.Fprintf(w, "%-*s %-30s %-30s %-7s %s\n", width, "figure", "baseline median (min–max)", "trellis median (min–max)", "ratio", "target")
	for _, r := range rows {
		ratio := Median(r.Subj) / Median(r.Base)
		verdict := fmt.Sprintf("≥%.2f met", r.Target)
		switch {
		case r.Target == 0:
			verdict = "report"
		case ratio < r.Target:
			verdict = fmt.Sprintf("≥%.2f MISSED", r.Target)
		}
		fmt.Fprintf(w, "%-*s %-30s %-30s %-7.3f %s\n", width, r.Name,
			fmt.Sprintf("%.3g (%s)", Median(r.Base), span(r.Base)), fmt.Sprintf("%.3g (%s)", Median(r.Subj), span(r.Subj)), ratio, verdict)
	}
}

// Image is the reference of the benchmark image: Debian's iperf3 with its
// libraries, and /trellis-bench (images/bench) for the request/response
// loop. `make bench-image` builds it (hack/build-image -image bench) and the
// lab imports it into every node. Bump the tag whenever its content
// changes: clusters run it with imagePullPolicy IfNotPresent.
const Image = "trellis.dev/bench:1"

// Ports the benchmark servers listen on, in pods and on nodes.
const (
	IperfPort = 15201
	RRPort    = 15202
)

// RRResult is what `trellis-bench rr` prints.
type RRResult struct {
	TransactionsPerSecond float64 `json:"transactions_per_second"`
}

// ParseRR reads `trellis-bench rr` output.
func ParseRR(out []byte) (float64, error) {
	var r RRResult
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("parse request/response output %q: %w", out, err)
	}
	if r.TransactionsPerSecond <= 0 {
		return 0, fmt.Errorf("request/response: no round trip completed")
	}
	return r.TransactionsPerSecond, nil
}
