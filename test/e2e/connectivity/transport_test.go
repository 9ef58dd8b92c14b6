//go:build e2e

package connectivity

import (
	"context"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// TestE2EExecTransportAgreesWithNetns runs the same truth tables through the
// API transport (agnhost connect exec'd in each source pod, as against any
// cluster) that the lab's netns transport checks: open TCP and UDP ports must
// read as reached and a closed port as not reached, so each transport can
// fail on its own.
func TestE2EExecTransportAgreesWithNetns(t *testing.T) {
	nodes := l.Nodes()
	specs := []struct{ name, node string }{{"a", nodes[0]}, {"b", nodes[0]}}
	if l.HasAgent() && len(nodes) > 1 {
		specs = append(specs, struct{ name, node string }{"c", nodes[1]})
	}
	ns := l.Namespace(t, "e2e-exec", nil)
	var ps []framework.PodSpec
	for _, s := range specs {
		ps = append(ps, framework.PodSpec{Name: s.name, Node: s.node})
	}
	pods := l.CreatePods(t, ns, ps, 90*time.Second)
	exec := connectivity.ExecProber{Config: l.Config, CS: l.CS, Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, c := range []struct {
		port  int
		proto string
		want  bool
	}{{80, "tcp", true}, {81, "udp", true}, {8081, "tcp", false}} {
		expected := connectivity.NewMatrix(pods, c.want)
		for name, p := range map[string]connectivity.Prober{"exec": exec, "netns": l.Prober} {
			observed, err := connectivity.Expect(ctx, p, expected, c.port, c.proto, 3)
			if err != nil {
				t.Fatalf("%s transport, %d/%s: %v", name, c.port, c.proto, err)
			}
			if d := expected.Diff(observed); d != 0 {
				t.Errorf("%s transport, %d/%s:\n%s", name, c.port, c.proto, connectivity.Report(expected, observed))
			}
		}
	}
}
