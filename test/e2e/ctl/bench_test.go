//go:build e2e

package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	trellisctl_ "github.com/trellisnet/trellis/internal/ctl"
)

// TestE2ECtlBench runs a short `trellisctl bench` against the lab: every
// figure has pod and node results above zero and a ratio a working pod
// network gives, a congestion control is skipped only when a node's kernel
// lacks it, and the benchmark namespace is gone afterwards.
func TestE2ECtlBench(t *testing.T) {
	r := trellisctl(t, 90*time.Second, "bench", "--runs", "1", "--seconds", "2", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("trellisctl bench: exit %d, want 0\n%s", r.Code, r.Stderr)
	}
	var rep trellisctl_.BenchReport
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("bench -o json: %v\n%s", err, r.Stdout)
	}
	if rep.ServerNode == rep.ClientNode || rep.ServerNode == "" {
		t.Errorf("server node %q, client node %q: want two different nodes", rep.ServerNode, rep.ClientNode)
	}
	if len(rep.Results) != 3 {
		t.Fatalf("%d results, want 3 (bbr, cubic, request/response): %+v", len(rep.Results), rep.Results)
	}
	measured := 0
	for _, res := range rep.Results {
		if res.Skipped != "" {
			offered := true
			for _, avail := range rep.CongestionAvailable {
				offered = offered && slices.Contains(avail, res.Congestion)
			}
			if res.Congestion == "" || offered {
				t.Errorf("%s skipped (%s) although every node offers it: %v", res.Name, res.Skipped, rep.CongestionAvailable)
			}
			continue
		}
		measured++
		if res.Pod.Median <= 0 || res.Node.Median <= 0 || len(res.Pod.Samples) != 1 || len(res.Node.Samples) != 1 {
			t.Errorf("%s: pod %+v node %+v: want one sample > 0 on each side", res.Name, res.Pod, res.Node)
		}
		// The pod path adds a veth pair and the node's forwarding to the
		// same underlay; it cannot be 20 times slower nor 3 times faster.
		if res.Ratio < 0.05 || res.Ratio > 3 {
			t.Errorf("%s: ratio pod ÷ node %.3f, want between 0.05 and 3", res.Name, res.Ratio)
		}
	}
	if measured < 2 {
		t.Errorf("%d figures measured, want at least throughput and request/response", measured)
	}
	for _, cc := range []string{"bbr", "cubic"} {
		if !strings.Contains(r.Stdout, `"`+cc+`"`) {
			t.Errorf("report does not mention %s", cc)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nss, err := l.CS.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: trellisctl_.BenchNamespaceLabel})
	if err != nil {
		t.Fatal(err)
	}
	if len(nss.Items) != 0 {
		t.Errorf("benchmark namespace %s outlived trellisctl bench", nss.Items[0].Name)
	}

	interruptedBenchLeavesNothing(t)

	bad := trellisctl(t, 20*time.Second, "bench", "--nodes", "no-such-node,"+rep.ClientNode)
	if bad.Code != trellisctl_.ExitUsage || !strings.Contains(bad.Stderr, "no-such-node") {
		t.Errorf("bench --nodes with an unknown node: exit %d, stderr %q; want exit 2 naming it", bad.Code, bad.Stderr)
	}
}

// interruptedBenchLeavesNothing sends SIGINT (Ctrl-C) to a bench during
// its first run: trellisctl must stop with an error and delete its
// namespace before it exits.
func interruptedBenchLeavesNothing(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin := filepath.Join(filepath.Dir(l.Bin), "trellisctl")
	cmd := exec.CommandContext(ctx, bin, "--kubeconfig", l.Paths.AdminKubeconfig(), "bench", "--runs", "5", "--seconds", "5")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "pods running") {
			break
		}
	}
	time.Sleep(2 * time.Second) // into the first iperf3 run, an exec in flight
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stderr)
	err = cmd.Wait()
	seen.Write(rest)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != trellisctl_.ExitError {
		t.Errorf("interrupted bench: %v, want exit %d\n%s", err, trellisctl_.ExitError, seen.String())
	}
	lines := strings.Split(strings.TrimSpace(seen.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "trellisctl: ") || !strings.Contains(last, "interrupted") {
		t.Errorf("interrupted bench: last stderr line %q, want one line saying it was interrupted", last)
	}
	nss, err := l.CS.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: trellisctl_.BenchNamespaceLabel})
	if err != nil {
		t.Fatal(err)
	}
	if len(nss.Items) != 0 {
		t.Errorf("namespace %s outlived an interrupted bench\n%s", nss.Items[0].Name, seen.String())
	}
	t.Logf("interrupted bench:\n%s", seen.String())
}
