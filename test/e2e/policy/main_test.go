//go:build e2e

// Package policy holds the NetworkPolicy end-to-end tests against
// a trellis-lab cluster, in the style of the upstream Kubernetes netpol
// e2e suite: namespaces x, y, z with pods a, b, c (one per node), servers
// on 80 and 81 over TCP and UDP, and for every case the whole truth table
// probed from inside the pods and compared with the reference evaluator
// (internal/policy/oracle) evaluated on the live API objects.
//
// IP families: the truth tables are probed over every family of the lab, a
// table per family (in a dual-stack lab, `--ip-family dual`, each pod at its
// IPv4 and at its IPv6 address; the oracle sees each pod with that family's
// address, which is what ipBlocks match). ipBlock cases carry a block per
// family; with two families one case uses a block of one family only. The
// random test draws ipBlocks of every family when the lab has IPv6.
// hack/e2e-dualstack.sh runs the truth tables and the random test in a
// dual-stack and an IPv6-only lab.
//
// SCTP: this kernel has no SCTP sockets, so SCTP 80/81 is probed with the
// lab's raw-packet probe (probe.ProbeSCTP: a crafted INIT sent from the source
// pod, verdict = seen on the destination pod's interface), in the truth
// table cases that opt in (no policies, default deny ingress, SCTP not
// admitted by a TCP rule, an SCTP rule admits SCTP and not TCP), over every
// family of the lab; the full SCTP semantics are also covered at tier 0
// (property test) and tier 1.
package policy

import (
	"testing"
	"time"

	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

func TestMain(m *testing.M) { framework.Main(m, &l, 15*time.Minute) }

// requireAgent fails (not skips) when the lab runs without the agent.
func requireAgent(t *testing.T) {
	t.Helper()
	if !l.HasAgent() {
		t.Fatalf("the lab runs without the Trellis agent (%s): policy e2e tests cannot run", l.State.AgentError)
	}
}
