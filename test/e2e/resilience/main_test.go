//go:build e2e

// Package resilience holds the end-to-end tests of faults around Trellis
// rather than in it — the API server away — against a trellis-lab cluster
// of its own (3+ nodes over 2 subnets, the DaemonSet install by default).
// It runs once, in the lab's routing mode: its checks do not depend on it.
package resilience

import (
	"context"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

func TestMain(m *testing.M) { framework.Main(m, &l, 15*time.Minute) }

// pair returns two nodes whose pods the routing mode connects: on two
// subnets unless the mode is native (which cannot cross them). It fails
// the test when the lab runs without the agent or has no such pair.
func pair(t *testing.T) (string, string) {
	t.Helper()
	if !l.HasAgent() {
		t.Fatalf("the lab runs without the Trellis agent (%s)", l.State.AgentError)
	}
	nodes := l.Nodes()
	native := l.State.Topology.Options.RoutingMode == "native"
	for _, n := range nodes[1:] {
		if l.SameSubnet(nodes[0], n) == native {
			return nodes[0], n
		}
	}
	t.Fatalf("no pair of nodes for routing mode %s among %v", l.State.Topology.Options.RoutingMode, nodes)
	return "", ""
}

func host(t *testing.T, node string) topology.Host {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// waitUntil polls cond every 20 ms and fails t when it does not hold
// within limit; it returns how long it took.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	err := kube.Poll(context.Background(), 20*time.Millisecond, limit, func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("%s: not within %v", what, limit)
	}
	return time.Since(start)
}
