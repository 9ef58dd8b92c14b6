//go:build e2e

// Package agent holds the trellis-agent end-to-end tests against
// a trellis-lab cluster: 3+ nodes over 2 underlay subnets, in the routing
// mode the lab was brought up with (TRELLIS_LAB_ROUTING, default auto).
package agent

import (
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

func TestMain(m *testing.M) { framework.Main(m, &l, 15*time.Minute) }

// requireAgent fails (not skips) when the lab runs without the agent.
func requireAgent(t *testing.T) {
	t.Helper()
	if !l.HasAgent() {
		t.Fatalf("the lab runs without the Trellis agent (%s): agent e2e tests cannot run", l.State.AgentError)
	}
	if len(l.Nodes()) < 3 || len(l.State.Topology.Subnets) < 2 {
		t.Fatalf("agent e2e tests need 3+ nodes over 2+ subnets, lab has %d nodes over %d subnets",
			len(l.Nodes()), len(l.State.Topology.Subnets))
	}
}

func mode() string { return l.State.Topology.Options.RoutingMode }

// reachable says whether the agent's mode is expected to connect pods (or
// pod subnets) on nodes a and b: native cannot cross subnets.
func reachable(a, b string) bool { return mode() != "native" || a == b || l.SameSubnet(a, b) }

// nodeDataplane opens a netlink handle inside a node's network namespace.
func nodeDataplane(t *testing.T, node string) *netlinkprog.Programmer {
	t.Helper()
	path := framework.NetnsPath(l.NodeHost(t, node).Netns)
	return &netlinkprog.Programmer{Handle: framework.NetlinkAt(t, path), NetnsPath: path}
}

// hasRoute reports whether node holds a Trellis route to dst.
func hasRoute(t *testing.T, dp *netlinkprog.Programmer, dst netip.Prefix) bool {
	t.Helper()
	rs, err := dp.ListRoutes()
	if err != nil {
		t.Fatalf("list routes: %v", err)
	}
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == dst.String() {
			return true
		}
	}
	return false
}

func getPod(t *testing.T, ref string) *corev1.Pod { t.Helper(); return l.Pod(t, ref) }

// podAddr is a running pod's primary address (Status.PodIP).
func podAddr(t *testing.T, ref string) netip.Addr {
	t.Helper()
	ip := getPod(t, ref).Status.PodIP
	a, err := netip.ParseAddr(ip)
	if err != nil {
		t.Fatalf("pod %s: address %q: %v", ref, ip, err)
	}
	return a
}

// podNetns returns the netns path of a running pod.
func podNetns(t *testing.T, ref string) string { t.Helper(); return l.PodNetns(t, ref) }

// inNetns runs f with the calling goroutine in the namespace at path.
func inNetns(t *testing.T, path string, f func() error) { t.Helper(); framework.InNetns(t, path, f) }

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
