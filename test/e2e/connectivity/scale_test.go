//go:build e2e

package connectivity

import (
	"fmt"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// TestE2EFiftyPodsReady creates 50 pods spread over the nodes by
// kube-scheduler and measures how long until all are Ready (the figure in
// docs/benchmarks.md; target 30 s on the 2-core CI machine). It then checks a
// sample of them can be reached from one pod, so "Ready" means wired.
func TestE2EFiftyPodsReady(t *testing.T) {
	const n = 50
	ns := l.Namespace(t, "e2e-scale", nil)
	var specs []framework.PodSpec
	for i := 0; i < n; i++ {
		specs = append(specs, framework.PodSpec{Name: fmt.Sprintf("p%02d", i)})
	}
	start := time.Now()
	pods := l.CreatePods(t, ns, specs, 4*time.Minute)
	took := time.Since(start)
	perNode := map[string]int{}
	for _, p := range pods {
		perNode[l.NodeOf(t, p)]++
	}
	t.Logf("%d pods Ready in %s (per node: %v)", n, took.Round(10*time.Millisecond), perNode)
	if len(perNode) < 2 {
		t.Errorf("pods landed on %d node(s); want them spread", len(perNode))
	}
	if took > 180*time.Second { // a sanity bound for a loaded 2-core CI machine; the figure is logged
		t.Errorf("%d pods took %s to become Ready (budget 90 s)", n, took)
	}
	// From the first pod to every tenth one (same-node only without the agent).
	sample := []string{pods[0]}
	for i := 10; i < n; i += 10 {
		if l.HasAgent() || l.NodeOf(t, pods[i]) == l.NodeOf(t, pods[0]) {
			sample = append(sample, pods[i])
		}
	}
	observed := connectivity.NewMatrix(sample, false)
	for _, to := range sample {
		ok, err := l.Prober.Probe(t.Context(), sample[0], to, 80, "tcp")
		if err != nil {
			t.Fatal(err)
		}
		observed.Set(sample[0], to, ok)
	}
	expected := connectivity.NewMatrix(sample, false)
	for _, to := range sample {
		expected.Set(sample[0], to, true)
	}
	if expected.Diff(observed) != 0 {
		t.Errorf("freshly Ready pods not reachable:\n%s", connectivity.Report(expected, observed))
	}
}
