// Package dpbench holds the measurements shared by the dataplane
// benchmarks: iperf3 throughput and a 1-byte TCP request/response loop
// between network namespaces, and the side-by-side report.
package dpbench

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"time"

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
	cliArgs := []string{"iperf3", "-c", dst, "-p", "5299", "-t", fmt.Sprint(o.Seconds), "-J"}
	if o.Congestion != "" {
		cliArgs = append(cliArgs, "-C", o.Congestion)
	}
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
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, fmt.Errorf("parse iperf3 output: %w", err)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

// RR counts 1-byte TCP request/response round trips per second from src
// to an echo server bound to dst inside dstNS.
func RR(src, dstNS Netns, dst string, secs int) (float64, error) {
	var ln net.Listener
	if err := ns.WithNetNSPath(string(dstNS), func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(dst, "0"))
		return err
	}); err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	var c net.Conn
	if err := ns.WithNetNSPath(string(src), func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 3*time.Second)
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	buf := []byte{1}
	n := 0
	start := time.Now()
	for time.Since(start) < time.Duration(secs)*time.Second {
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

// Row is one figure: baseline and Trellis samples and the target ratio.
type Row struct {
	Name       string
	Target     float64
	Base, Subj []float64
}

// Compare measures base and subj alternately, runs times each, logging each run.
func Compare(name string, target float64, runs int, logf func(string, ...any), base, subj func() (float64, error)) (Row, error) {
	r := Row{Name: name, Target: target}
	for i := 0; i < runs; i++ {
		v, err := base()
		if err != nil {
			return r, fmt.Errorf("%s baseline: %w", name, err)
		}
		r.Base = append(r.Base, v)
		if v, err = subj(); err != nil {
			return r, fmt.Errorf("%s trellis: %w", name, err)
		}
		r.Subj = append(r.Subj, v)
		logf("  %s run %d: baseline %.3g trellis %.3g", name, i+1, r.Base[i], r.Subj[i])
	}
	return r, nil
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

// Report writes the side-by-side table.
func Report(w io.Writer, rows []Row) {
	fmt.Fprintf(w, "%-56s %-30s %-30s %-7s %s\n", "figure", "baseline median (min–max)", "trellis median (min–max)", "ratio", "target")
	for _, r := range rows {
		ratio := Median(r.Subj) / Median(r.Base)
		verdict := "met"
		if ratio < r.Target {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "%-56s %-30s %-30s %-7.3f ≥%.2f %s\n", r.Name,
			fmt.Sprintf("%.3g (%s)", Median(r.Base), span(r.Base)), fmt.Sprintf("%.3g (%s)", Median(r.Subj), span(r.Subj)), ratio, r.Target, verdict)
	}
}
