//go:build e2e

package bgp

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/connectivity"
)

// internalPeers are the established internal sessions of node, as
// "node/NAME" sorted.
func internalPeers(t *testing.T, node string) []string {
	t.Helper()
	var out []string
	if s := nodeStatus(t, node); s != nil {
		for _, p := range s.Status.Peers {
			if strings.HasPrefix(p.Peer, "node/") && p.State == "Established" {
				out = append(out, p.Peer)
			}
		}
	}
	sort.Strings(out)
	return out
}

// wantPeering waits until every node's established internal sessions are
// want(node) and returns how long that took.
func wantPeering(t *testing.T, mode string, want func(node string) []string) time.Duration {
	t.Helper()
	var last string
	took := eventually(t, 90*time.Second, "internal peering "+mode+" converged", func() bool {
		var b strings.Builder
		ok := true
		for _, n := range l.Nodes() {
			got, w := internalPeers(t, n), want(n)
			fmt.Fprintf(&b, "%s: %v (want %v); ", n, got, w)
			ok = ok && strings.Join(got, ",") == strings.Join(w, ",")
		}
		last = b.String()
		return ok
	})
	t.Logf("%s: %s", mode, last)
	return took
}

// Switching the internal peering live (None -> FullMesh -> RouteReflector ->
// None) converges to the sessions each mode means, without restarting an
// agent, and pods keep reaching each other.
func TestE2EBGPPeeringSwitchLive(t *testing.T) {
	requireBGPLab(t)
	waitToR(t, 90*time.Second)
	_, pods := newPods(t, "bgp-peering")
	nodes := l.Nodes()
	pids := map[string]int{}
	for _, n := range nodes {
		pids[n] = l.AgentPID(t, n)
	}
	orig := l.State.Topology.Options.BGPPeeringOrDefault()
	t.Cleanup(func() {
		mergePatch(t, configurations, "default", map[string]any{"spec": map[string]any{"internalPeering": orig}})
	})
	reflector := nodes[0] // the lab's BGPConfiguration: node1 reflects
	others := func(n string) []string {
		var out []string
		for _, m := range nodes {
			if m != n {
				out = append(out, "node/"+m)
			}
		}
		sort.Strings(out)
		return out
	}
	steps := []struct {
		mode string
		want func(string) []string
	}{
		{"FullMesh", others},
		{"RouteReflector", func(n string) []string {
			if n == reflector {
				return others(n)
			}
			return []string{"node/" + reflector}
		}},
		{"None", func(string) []string { return nil }},
	}
	all := connectivity.NewMatrix(pods, true)
	for _, s := range steps {
		mergePatch(t, configurations, "default", map[string]any{"spec": map[string]any{"internalPeering": s.mode}})
		took := wantPeering(t, s.mode, s.want)
		figure(t, "internal peering switched live to %s: sessions converged in %s", s.mode, took.Round(time.Millisecond))
		waitToR(t, 30*time.Second)
		l.ExpectMatrix(t, pods, 80, "tcp", all)
	}
	for _, n := range nodes {
		if got := l.AgentPID(t, n); got != pids[n] {
			t.Errorf("%s's agent was restarted (PID %d, then %d)", n, pids[n], got)
		}
	}
}
