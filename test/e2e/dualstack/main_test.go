//go:build e2e && dualstack

// Package dualstack is the lab e2e suite of a cluster with IPv6: brought up
// with `trellis-lab up --ip-family dual` (or ipv6, TRELLIS_LAB_IP_FAMILY),
// in the routing mode of TRELLIS_LAB_ROUTING (native, vxlan or auto; the
// routed tests run again in the two other modes, the agents reconfigured
// live: TestE2EDualStackRoutingModes). It
// checks the lab (every Node has an InternalIP and a pod CIDR per family, a
// dual-stack Service gets a ClusterIP per family, the underlay carries IPv6
// and routes nothing out of the lab) and Trellis over every family of the
// cluster: pod addresses, the pod-to-pod truth tables across nodes and
// subnets, node to pod and pod to node, Services of each family through
// kube-proxy, masquerade to the external host and full-size UDP with DF (or
// IPv6's no-fragmentation) in each family. The NetworkPolicy truth tables
// and the random differential test over both families are test/e2e/policy
// run against the same lab (hack/e2e-lanes.sh, make test-e2e-dualstack).
//
// The build tag keeps it out of `go test -tags e2e ./test/e2e/...`, whose
// labs are IPv4: run it with -tags e2e,dualstack.
package dualstack

import (
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

var lab *framework.Lab

func TestMain(m *testing.M) { framework.Main(m, &lab, 5*time.Minute) }

// topo is the lab's plan; the suite needs IPv6 in it.
func topo(t *testing.T) topology.Topology {
	t.Helper()
	tp := lab.State.Topology
	if !tp.HasIPv6() {
		t.Fatalf("the lab has no IPv6 (IP family %q): bring it up with --ip-family dual or ipv6 (TRELLIS_LAB_IP_FAMILY)", tp.Options.IPFamily)
	}
	return tp
}

// requireAgent fails (not skips) when the lab cannot run the Trellis tests:
// no agent, or fewer than 3 nodes over 2 subnets.
func requireAgent(t *testing.T) topology.Topology {
	t.Helper()
	tp := topo(t)
	if !lab.HasAgent() {
		t.Fatalf("the lab runs without the Trellis agent (%s)", lab.State.AgentError)
	}
	if len(tp.Nodes) < 3 || len(tp.Subnets) < 2 {
		t.Fatalf("the dual-stack e2e tests need 3+ nodes over 2+ subnets, the lab has %d nodes over %d subnets", len(tp.Nodes), len(tp.Subnets))
	}
	return tp
}

// agentMode is the agents' routing mode while TestE2EDualStackRoutingModes
// runs the routed tests in a mode other than the lab's; "" the lab's.
var agentMode string

// mode is the routing mode the agents run in.
func mode() string {
	if agentMode != "" {
		return agentMode
	}
	return lab.State.Topology.Options.RoutingMode
}

// reachable says whether pods on nodes a and b are expected to connect in
// the lab's routing mode, in every family (the families share the underlay
// subnets): native routing cannot cross subnets.
func reachable(a, b string) bool { return mode() != "native" || a == b || lab.SameSubnet(a, b) }

// eachFamily runs f as a subtest per family of the lab, named after it.
func eachFamily(t *testing.T, f func(t *testing.T, fam topology.ClusterFamily)) {
	t.Helper()
	for _, fam := range lab.Families() {
		t.Run(fam.Name(), func(t *testing.T) { f(t, fam) })
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Errorf("%s: not within %v: %v", what, within, err)
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
