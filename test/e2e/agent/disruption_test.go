//go:build e2e

package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// stream is framework.Stream: TCP on 19000, UDP on 19001.
type stream = framework.Stream

func startStream(t *testing.T, a, b string) *stream { return l.StartStream(t, a, b, 19000) }

func agentPID(t *testing.T, node string) int { return l.AgentPID(t, node) }

// restartAgent kills the agent on node with SIGKILL and waits until a new
// one runs (kubelet restarts the container / the node restarts the process).
func restartAgent(t *testing.T, node string) {
	t.Helper()
	l.KillAgent(t, node)
}

// crossPair picks two nodes whose pods the mode connects across nodes:
// different subnets unless the mode is native.
func crossPair() (string, string) {
	n := l.Nodes()
	if mode() == "native" {
		return n[0], n[2]
	}
	return n[0], n[1]
}

// kill -9 of the agents on both ends of a long-lived stream: no reset, no
// lost byte, under 1% UDP loss, routes never removed.
func TestE2EAgentKill9DuringStream(t *testing.T) {
	requireAgent(t)
	na, nb := crossPair()
	pods := l.PodPerNode(t, "agent-kill", []string{na, nb})
	nodeB, _ := l.CS.CoreV1().Nodes().Get(context.Background(), nb, metav1.GetOptions{})
	cidrB := routing.PodCIDRs(nodeB)[0]
	dpA := nodeDataplane(t, na)
	s := startStream(t, pods[0], pods[1])
	var routeMissing atomic.Int32
	watch := make(chan struct{})
	go func() {
		for {
			select {
			case <-watch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if rs, err := dpA.ListRoutes(); err == nil && !containsDst(rs, cidrB) {
				routeMissing.Add(1)
			}
		}
	}()
	time.Sleep(3 * time.Second)
	restartAgent(t, na)
	restartAgent(t, nb)
	time.Sleep(5 * time.Second)
	close(watch)
	s.Finish(t, fmt.Sprintf("stream %s (%s) -> %s (%s) across kill -9 of both agents", pods[0], na, pods[1], nb))
	if n := routeMissing.Load(); n > 0 {
		t.Errorf("route to %s missing on %s in %d samples during the agent restart", cidrB, na, n)
	}
}

func containsDst(rs []netlink.Route, dst netip.Prefix) bool {
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == dst.String() {
			return true
		}
	}
	return false
}

// routeDev returns the device of node's Trellis route to dst ("" if none).
func routeDev(t *testing.T, dp *netlinkprog.Programmer, dst netip.Prefix) string {
	t.Helper()
	rs, err := dp.ListRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == dst.String() {
			link, err := dp.Handle.LinkByIndex(r.LinkIndex)
			if err != nil {
				t.Fatal(err)
			}
			return link.Attrs().Name
		}
	}
	return ""
}

// setAgentMode changes the routing mode of node's agent (the DaemonSet's
// ConfigMap, or the node's configuration file in process mode) and restarts
// it. mode "" restores the lab's mode.
func setAgentMode(t *testing.T, node, newMode string) {
	t.Helper()
	l.SetAgentMode(t, node, newMode)
}

// Mode change by configuration + agent restart: converges to the new mode's
// routes, and a stream between pods whose path does not change survives.
func TestE2EAgentModeChangeConverges(t *testing.T) {
	requireAgent(t)
	target := "vxlan"
	if mode() == "vxlan" {
		target = "auto"
	}
	nodes := l.Nodes()
	// Cross-subnet pods: their path is VXLAN in auto and vxlan modes.
	var a, b string
	if mode() != "native" {
		a, b = nodes[0], nodes[1]
	}
	var s *stream
	var pods []string
	if a != "" {
		pods = l.PodPerNode(t, "agent-mode", []string{a, b})
		s = startStream(t, pods[0], pods[1])
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			setAgentMode(t, n, "")
		}
	})
	for _, n := range nodes {
		setAgentMode(t, n, target)
	}
	list, err := l.CS.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dps := map[string]*netlinkprog.Programmer{}
	for _, n := range nodes {
		dps[n] = nodeDataplane(t, n)
	}
	took := eventually(t, 20*time.Second, "routes of mode "+target, func() bool {
		for _, self := range nodes {
			dp := dps[self]
			for _, peer := range list.Items {
				if peer.Name == self {
					continue
				}
				// vxlan: everything through the overlay; auto: the
				// underlay to same-subnet peers, the overlay otherwise.
				wantOverlay := target == "vxlan" || !l.SameSubnet(self, peer.Name)
				got := routeDev(t, dp, routing.PodCIDRs(&peer)[0])
				if got == "" || wantOverlay != (got == "trellis.vxlan") {
					return false
				}
			}
		}
		return true
	})
	t.Logf("mode %s -> %s converged %v after the restarts", mode(), target, took)
	all := l.PodPerNode(t, "agent-mode-tt", nodes)
	l.ExpectMatrix(t, all, 80, "tcp", connectivity.NewMatrix(all, true))
	if s != nil {
		s.Finish(t, fmt.Sprintf("stream %s -> %s across the mode change", pods[0], pods[1]))
	}
}
