//go:build e2e

package bgp

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/tor"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// routeWatch polls the ToR every 50 ms for prefix via next hop and the lab
// router's kernel for its route, until stopped; it counts the polls that
// found either missing.
type routeWatch struct {
	polls, missing atomic.Int64
	firstMiss      atomic.Value // time.Time
	stop           chan struct{}
	wg             sync.WaitGroup
}

func watchRoute(t *testing.T, p netip.Prefix, via netip.Addr) *routeWatch {
	t.Helper()
	w := &routeWatch{stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			// The whole table: `show route PREFIX` fails for a prefix not there.
			out, err := tor.Birdc(context.Background(), l.Paths, "show", "route")
			ok := false
			if err == nil {
				for _, a := range tor.BestNextHops(tor.ParseRoutes(out))[p] {
					ok = ok || a == via
				}
			}
			kr, kerr := inNetns(l.State.Topology.RouterNetns, "ip", "-4", "route", "show", "exact", p.String())
			ok = ok && kerr == nil && strings.Contains(kr, "via "+via.String())
			w.polls.Add(1)
			if !ok {
				if w.missing.Add(1) == 1 {
					w.firstMiss.Store(time.Now())
				}
			}
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *routeWatch) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// finishLossless stops a stream and requires every TCP byte and every UDP
// datagram delivered.
func finishLossless(t *testing.T, s *framework.Stream, what string) framework.StreamResult {
	t.Helper()
	r := s.Stop(t, what)
	if r.TCPErr != nil {
		t.Errorf("%s: %v", what, r.TCPErr)
	}
	if r.TCPReceived != r.TCPSent || r.TCPSent == 0 {
		t.Errorf("%s: TCP received %d of %d bytes", what, r.TCPReceived, r.TCPSent)
	}
	if r.UDPSent < 1000 || r.UDPReceived != r.UDPSent {
		t.Errorf("%s: UDP %d of %d datagrams arrived (longest run lost %d), want all", what, r.UDPReceived, r.UDPSent, r.UDPMaxGap)
	}
	figure(t, "%s: TCP %d bytes intact, %d segments retransmitted; UDP %d/%d datagrams (%.2f%% loss, longest run lost %d)",
		what, r.TCPReceived, r.Retransmits, r.UDPReceived, r.UDPSent, r.UDPLoss, r.UDPMaxGap)
	return r
}

// kill -9 of an agent during streams between the external host and a pod
// on its node, both ways: no datagram lost, no byte lost, the ToR never
// withdraws the node's pod CIDR (its log shows a graceful restart, done
// once the new agent sent End-of-RIB), and no NOTIFICATION reaches it.
func TestE2EBGPKill9GracefulRestart(t *testing.T) {
	requireBGPLab(t)
	waitToR(t, 90*time.Second)
	_, pods := newPods(t, "bgp-kill")
	node, pod := l.Nodes()[1], pods[1]
	h := nodeHost(t, node)
	cidr := podCIDR(t, node)
	if bfdUp(t, h.Addr) {
		t.Fatalf("the ToR runs BFD with %s: BFD ends with the agent's process, so graceful restart cannot hold its routes (the lab's BGPPeers have BFD off)", node)
	}
	name, _ := torSession(t, h.Addr)
	if name == "" || !established(t, h.Addr) {
		t.Fatalf("no established ToR session with %s:\n%s", node, birdc(t, "show", "protocols"))
	}
	podIP := l.Pod(t, pod).Status.PodIP
	podNS := l.PodNetns(t, pod)
	in := framework.StartStreamNetns(t, "external -> "+pod, extNetns(), podNS, podIP, 9000)
	out := framework.StartStreamNetns(t, pod+" -> external", podNS, extNetns(), l.State.Topology.OriginAddr.String(), 9100)
	w := watchRoute(t, cidr, h.Addr)
	time.Sleep(2 * time.Second)
	off := torLogSize(t)
	killed := time.Now()
	l.KillAgent(t, node)
	running := time.Since(killed)
	var log string
	done := eventually(t, restartTime(), "the ToR's graceful restart of "+name+" done (End-of-RIB from the new agent)", func() bool {
		log = torLogSince(t, off)
		return strings.Contains(log, name+": Neighbor graceful restart done")
	})
	time.Sleep(2 * time.Second)
	// Enough datagrams for "all arrived" to mean something on a loaded machine.
	in.WaitDatagrams(t, 1000, 30*time.Second)
	out.WaitDatagrams(t, 1000, 30*time.Second)
	w.halt()
	finishLossless(t, in, "external -> "+pod+" across kill -9 of "+node+"'s agent")
	finishLossless(t, out, pod+" -> external across kill -9 of "+node+"'s agent")
	log = torLogSince(t, off)
	t.Logf("ToR log since the kill:\n%s", log)
	if !strings.Contains(log, name+": Neighbor graceful restart detected") {
		t.Errorf("the ToR's log shows no graceful restart of %s", name)
	}
	for _, bad := range []string{name + ": Neighbor graceful restart timeout", name + ": Received: ", name + ": State changed to flush"} {
		if strings.Contains(log, bad) {
			t.Errorf("the ToR's log has %q: the routes were not held", bad)
		}
	}
	if m := w.missing.Load(); m > 0 {
		t.Errorf("%s via %s was missing from the ToR or the router's kernel in %d of %d polls (first at %s after the kill)",
			cidr, h.Addr, m, w.polls.Load(), w.firstMiss.Load().(time.Time).Sub(killed).Round(time.Millisecond))
	}
	figure(t, "kill -9 of %s's agent: new agent running after %s, ToR graceful restart done after %s (restart time %s); %s held in all %d polls",
		node, running.Round(time.Millisecond), (running + done).Round(time.Millisecond), restartTime(), cidr, w.polls.Load())
}

// bfdUp reports whether the ToR's BFD session with addr is up.
func bfdUp(t *testing.T, addr netip.Addr) bool {
	t.Helper()
	for _, line := range strings.Split(birdc(t, "show", "bfd", "sessions"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == addr.String() && f[2] == "Up" {
			return true
		}
	}
	return false
}

// labNode runs `trellis-lab stop-node|start-node NODE`.
func labNode(t *testing.T, verb, node string) {
	t.Helper()
	if out, err := exec.Command(l.Bin, verb, node).CombinedOutput(); err != nil {
		t.Fatalf("trellis-lab %s %s: %v\n%s", verb, node, err, out)
	}
}

// An agent kept down is withdrawn from the ToR at the restart time it
// announced, not before; meanwhile its node keeps its learned kernel
// routes. The agent is kept down by stopping its node's kubelet, container
// runtime and containers (`trellis-lab stop-node`: the node's network
// namespace and kernel state stay; kubelet would restart a killed agent,
// and resets a label that takes the node out of the DaemonSet within
// seconds). Started again, its pod CIDR is back on the ToR at once (a
// normal start does not delay advertisements).
func TestE2EBGPAgentDownWithdrawnAtRestartTime(t *testing.T) {
	requireBGPLab(t)
	waitToR(t, 90*time.Second)
	node := l.Nodes()[2]
	h := nodeHost(t, node)
	cidr := podCIDR(t, node)
	other := otherSubnetNode(t, node)
	otherCIDR := podCIDR(t, other)
	name, _ := torSession(t, h.Addr)
	if name == "" || !established(t, h.Addr) {
		t.Fatalf("no established ToR session with %s:\n%s", node, birdc(t, "show", "protocols"))
	}
	off := torLogSize(t)
	restored := false
	restore := func() {
		if !restored {
			restored = true
			labNode(t, "start-node", node)
		}
	}
	labNode(t, "stop-node", node)
	t.Cleanup(restore)
	if pid := l.AgentPID(t, node); pid != 0 {
		t.Fatalf("%s's agent still runs (PID %d) after stop-node", node, pid)
	}
	// The ToR's own clock says when the session went and when the restart
	// time ran out (its log lines carry milliseconds).
	detected := name + ": Neighbor graceful restart detected"
	eventually(t, 30*time.Second, "the ToR's log: "+detected, func() bool { return strings.Contains(torLogSince(t, off), detected) })
	down, ok := torLogTime(torLogSince(t, off), detected)
	if !ok {
		t.Fatalf("no time on the ToR's log line %q", detected)
	}
	half := false
	var gone time.Time
	for {
		if !torHas(t, cidr, h.Addr) {
			gone = time.Now()
			break
		}
		since := time.Since(down)
		if !half && since > restartTime()/2 {
			half = true
			// The agent is gone; its node's learned routes stay.
			out := inNode(t, node, "ip", "-4", "route", "show", "exact", otherCIDR.String(), "proto", "159")
			if strings.TrimSpace(out) == "" {
				t.Errorf("%s lost its protocol-159 route to %s (%s) while its agent was down", node, otherCIDR, other)
			}
		}
		if since > restartTime()+15*time.Second {
			t.Fatalf("%s still on the ToR %s after the session went down (restart time %s)", cidr, since.Round(time.Millisecond), restartTime())
		}
		time.Sleep(100 * time.Millisecond)
	}
	log := torLogSince(t, off)
	t.Logf("ToR log while %s's agent was down:\n%s", node, log)
	timeout, ok := torLogTime(log, name+": Neighbor graceful restart timeout")
	if !ok {
		t.Fatalf("the ToR's log has no graceful restart timeout of %s", name)
	}
	withdrawn := timeout.Sub(down)
	figure(t, "%s's agent kept down: its pod CIDR withdrawn from the ToR %s after the session closed (restart time %s; gone from `show route` %s after)",
		node, withdrawn.Round(time.Millisecond), restartTime(), gone.Sub(down).Round(time.Millisecond))
	if withdrawn < restartTime()-500*time.Millisecond {
		t.Errorf("withdrawn after %s, before the restart time %s", withdrawn.Round(time.Millisecond), restartTime())
	}
	if withdrawn > restartTime()+2*time.Second || gone.Sub(down) > restartTime()+5*time.Second {
		t.Errorf("withdrawn after %s (gone after %s), long after the restart time %s", withdrawn.Round(time.Millisecond),
			gone.Sub(down).Round(time.Millisecond), restartTime())
	}
	restore()
	start := time.Now()
	eventually(t, 120*time.Second, node+"'s agent running again", func() bool { return l.AgentPID(t, node) != 0 })
	running := time.Since(start)
	back := eventually(t, 60*time.Second, cidr.String()+" back on the ToR via "+node, func() bool { return torHas(t, cidr, h.Addr) })
	figure(t, "%s's agent started again: running after %s, its pod CIDR on the ToR %s later", node,
		running.Round(time.Millisecond), back.Round(time.Millisecond))
	if back > 15*time.Second {
		t.Errorf("the started agent's pod CIDR reached the ToR only after %s: advertisements were delayed", back.Round(time.Millisecond))
	}
}
