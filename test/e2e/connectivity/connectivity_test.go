//go:build e2e

// Package connectivity holds the lab's basic pod-to-pod e2e tests.
package connectivity

import (
	"fmt"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

func TestMain(m *testing.M) { framework.Main(m, &l, 10*time.Minute) }

// TestE2EPodToPod checks TCP (80) and UDP (81) between pods on the same node
// and, when the agent runs, across nodes on the same and on different
// underlay subnets: every pair must connect (no policy in this namespace).
func TestE2EPodToPod(t *testing.T) {
	nodes := l.Nodes()
	if len(nodes) < 2 {
		t.Fatalf("need at least 2 nodes, lab has %d", len(nodes))
	}
	ns := l.Namespace(t, "e2e-conn", nil)
	specs := []framework.PodSpec{{Name: "a", Node: nodes[0]}, {Name: "b", Node: nodes[0]}}
	if l.HasAgent() {
		for i, n := range nodes[1:] {
			specs = append(specs, framework.PodSpec{Name: fmt.Sprintf("c%d", i+1), Node: n})
		}
	} else {
		t.Logf("the lab runs without the Trellis agent: testing same-node connectivity only")
	}
	pods := l.CreatePods(t, ns, specs, 90*time.Second)
	crossSubnet := false
	for _, p := range pods {
		crossSubnet = crossSubnet || !l.SameSubnet(nodes[0], l.NodeOf(t, p))
	}
	t.Logf("pods %v; spans underlay subnets: %v", pods, crossSubnet)
	expected := connectivity.NewMatrix(pods, true)
	l.ExpectMatrix(t, pods, 80, "tcp", expected)
	l.ExpectMatrix(t, pods, 81, "udp", expected)
	// A closed port must read as "no answer", or the probe proves nothing.
	l.ExpectMatrix(t, pods[:2], 8081, "tcp", connectivity.NewMatrix(pods[:2], false))
}
