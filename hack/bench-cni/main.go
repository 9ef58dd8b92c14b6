// Command bench-cni measures CNI ADD+DEL latency through libcni for
// trellis-cni and, in the same run, for the reference plugins ptp +
// host-local from containernetworking/plugins. Both run inside the same
// throwaway node namespace, against the same pod namespaces, interleaved
// round by round so that machine noise hits both alike.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/cnirunner"
)

type options struct {
	trellisDir, refDir string
	pods, concurrency  int
	rounds             int
}

func main() {
	var o options
	flag.StringVar(&o.trellisDir, "trellis-bin", "bin", "directory holding trellis-cni")
	flag.StringVar(&o.refDir, "ref-bin", "", "directories holding ptp and host-local (colon-separated)")
	flag.IntVar(&o.pods, "pods", 200, "pods per round")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrent ADD+DEL sequences")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds per plugin (interleaved)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-cni:", err)
		os.Exit(1)
	}
}

type contender struct {
	name   string
	runner *cnirunner.Runner
	p50s   []time.Duration
	p99s   []time.Duration
}

func run(o options) error {
	if o.refDir == "" {
		return fmt.Errorf("-ref-bin is required")
	}
	tag := fmt.Sprintf("%d", os.Getpid())
	nodeName := "trl-bench-node-" + tag
	node, err := cnirunner.NewNetNS(nodeName)
	if err != nil {
		return err
	}
	defer cnirunner.DeleteNetNS(nodeName)
	defer node.Close()
	if err := cnirunner.Sysctl(node, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "trellis-bench-cni-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	pods := make([]string, o.pods)
	for i := range pods {
		pods[i] = fmt.Sprintf("trl-bench-%s-%d", tag, i)
		if _, err := cnirunner.NewNetNS(pods[i]); err != nil {
			return err
		}
		defer cnirunner.DeleteNetNS(pods[i])
	}
	bins := append([]string{o.trellisDir}, strings.Split(o.refDir, ":")...)
	mk := func(name string, plugin map[string]any) (*contender, error) {
		list, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": name, "plugins": []any{plugin}})
		r, err := cnirunner.New(list, bins, filepath.Join(work, name+"-cache"), node)
		return &contender{name: name, runner: r}, err
	}
	trellis, err := mk("trellis", map[string]any{
		"type": "trellis-cni", "mtu": 1400,
		"ipam":    map[string]any{"subnets": []string{"10.90.0.0/23"}, "dataDir": filepath.Join(work, "trellis-ipam")},
		"logFile": filepath.Join(work, "trellis-cni.log"),
	})
	if err != nil {
		return err
	}
	ref, err := mk("reference", map[string]any{
		"type": "ptp", "mtu": 1400,
		"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": "10.92.0.0/23"}}},
			"dataDir": filepath.Join(work, "host-local")},
	})
	if err != nil {
		return err
	}
	for round := range o.rounds {
		order := []*contender{trellis, ref}
		if round%2 == 1 {
			order = []*contender{ref, trellis}
		}
		for _, c := range order {
			lat, err := measure(c.runner, node, pods, o.concurrency)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", c.name, round+1, err)
			}
			c.p50s = append(c.p50s, percentile(lat, 50))
			c.p99s = append(c.p99s, percentile(lat, 99))
		}
	}
	report(o, trellis, ref)
	return nil
}

// measure runs ADD then DEL for every pod, concurrency at a time, and
// returns each pod's ADD+DEL latency.
func measure(r *cnirunner.Runner, node ns.NetNS, pods []string, concurrency int) ([]time.Duration, error) {
	lat := make([]time.Duration, len(pods))
	errs := make([]error, len(pods))
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	ctx := context.Background()
	for i, p := range pods {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			path := "/run/netns/" + p
			id := "bench-" + p
			start := time.Now()
			if _, err := r.Add(ctx, id, path, "eth0"); err != nil {
				errs[i] = fmt.Errorf("ADD %s: %w", p, err)
				return
			}
			if err := r.Del(ctx, id, path, "eth0"); err != nil {
				errs[i] = fmt.Errorf("DEL %s: %w", p, err)
				return
			}
			lat[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return lat, nil
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

func report(o options, t, r *contender) {
	fmt.Printf("\nCNI ADD+DEL latency: %d pods, %d concurrent, %d interleaved rounds each (median of rounds, min-max in brackets)\n\n",
		o.pods, o.concurrency, o.rounds)
	fmt.Printf("| %-22s | %-22s | %-22s |\n", "plugin", "p50 ms", "p99 ms")
	fmt.Printf("|%s|%s|%s|\n", dashes(24), dashes(24), dashes(24))
	for _, c := range []*contender{t, r} {
		label := "trellis-cni"
		if c == r {
			label = "ptp + host-local"
		}
		fmt.Printf("| %-22s | %-22s | %-22s |\n", label, span(c.p50s), span(c.p99s))
	}
	fmt.Printf("| %-22s | %-22s | %-22s |\n", "ratio trellis/ref",
		fmt.Sprintf("%.2fx", ratio(median(t.p50s), median(r.p50s))), fmt.Sprintf("%.2fx", ratio(median(t.p99s), median(r.p99s))))
	fmt.Println("\nTarget: ratio <= 1.00x on both p50 and p99.")
}

func span(d []time.Duration) string {
	return fmt.Sprintf("%s [%s-%s]", ms(median(d)), ms(slices.Min(d)), ms(slices.Max(d)))
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func dashes(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '-'
	}
	return string(b)
}
