//go:build e2e

package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/connectivity"
	labnode "github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

// stream is a TCP byte stream and a UDP datagram stream from pod a to pod b,
// run by the test process inside the pods' network namespaces.
type stream struct {
	tcpSent, tcpRecv atomic.Int64
	udpSent, udpRecv atomic.Int64
	tcpErr           error
	stop             chan struct{}
	wg               sync.WaitGroup
	mu               sync.Mutex
}

func startStream(t *testing.T, a, b string) *stream {
	t.Helper()
	s := &stream{stop: make(chan struct{})}
	pa, pb := podNetns(t, a), podNetns(t, b)
	ipB := getPod(t, b).Status.PodIP
	var ln net.Listener
	var udpIn *net.UDPConn
	inNetns(t, pb, func() error {
		var err error
		if ln, err = net.Listen("tcp4", net.JoinHostPort(ipB, "19000")); err != nil {
			return err
		}
		udpIn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ipB), Port: 19001})
		return err
	})
	conn, err := topology.DialInNetns(pa, "tcp", net.JoinHostPort(ipB, "19000"), 5*time.Second)
	if err != nil {
		t.Fatalf("TCP stream %s -> %s: %v", a, b, err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	udpOut, err := topology.DialInNetns(pa, "udp", net.JoinHostPort(ipB, "19001"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(dst *error, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if *dst == nil {
			*dst = err
		}
	}
	s.wg.Add(4)
	go func() { // TCP writer: ~4 MB/s of a counting pattern
		defer s.wg.Done()
		defer conn.Close()
		buf := make([]byte, 4096)
		var off int64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			for i := range buf {
				buf[i] = byte(off + int64(i))
			}
			n, err := conn.Write(buf)
			off += int64(n)
			s.tcpSent.Store(off)
			if err != nil {
				fail(&s.tcpErr, fmt.Errorf("TCP write after %d bytes: %w", off, err))
				return
			}
		}
	}()
	go func() { // TCP reader: verifies the pattern
		defer s.wg.Done()
		defer srv.Close()
		buf := make([]byte, 65536)
		var off int64
		for {
			n, err := srv.Read(buf)
			for i := 0; i < n; i++ {
				if buf[i] != byte(off+int64(i)) {
					fail(&s.tcpErr, fmt.Errorf("TCP stream corrupted at byte %d", off+int64(i)))
					return
				}
			}
			off += int64(n)
			s.tcpRecv.Store(off)
			if err == io.EOF {
				return
			}
			if err != nil {
				fail(&s.tcpErr, fmt.Errorf("TCP read after %d bytes: %w", off, err))
				return
			}
		}
	}()
	go func() { // UDP sender: 500 datagrams/s with sequence numbers
		defer s.wg.Done()
		defer udpOut.Close()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		msg := make([]byte, 64)
		for seq := uint64(0); ; seq++ {
			select {
			case <-s.stop:
				// Let the last datagrams arrive before the receiver stops.
				time.Sleep(300 * time.Millisecond)
				udpIn.Close()
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(msg, seq)
			// A datagram the kernel refused to send (no route, no
			// neighbour) is lost as surely as one dropped on the way.
			s.udpSent.Add(1)
			_, _ = udpOut.Write(msg)
		}
	}()
	go func() { // UDP receiver
		defer s.wg.Done()
		buf := make([]byte, 128)
		for {
			if _, err := udpIn.Read(buf); err != nil {
				return
			}
			s.udpRecv.Add(1)
		}
	}()
	return s
}

// finish stops the stream and checks: no TCP error or reset, every byte
// delivered, UDP loss under 1%.
func (s *stream) finish(t *testing.T, what string) {
	t.Helper()
	close(s.stop)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: stream did not finish", what)
	}
	if s.tcpErr != nil {
		t.Errorf("%s: %v", what, s.tcpErr)
	}
	if s.tcpRecv.Load() != s.tcpSent.Load() {
		t.Errorf("%s: TCP received %d of %d bytes", what, s.tcpRecv.Load(), s.tcpSent.Load())
	}
	sent, recv := s.udpSent.Load(), s.udpRecv.Load()
	loss := 100 * float64(sent-recv) / float64(max(sent, 1))
	t.Logf("%s: TCP %d bytes intact; UDP %d/%d datagrams (%.2f%% loss)", what, s.tcpRecv.Load(), recv, sent, loss)
	if sent < 1000 || loss >= 1 {
		t.Errorf("%s: UDP %d/%d datagrams arrived (%.2f%% loss), want under 1%%", what, recv, sent, loss)
	}
}

func agentPID(t *testing.T, node string) int {
	np, err := labnode.ReadPIDs(l.Paths.Node(node))
	if err != nil {
		t.Fatalf("pids of %s: %v", node, err)
	}
	return np.PIDs["trellis-agent"]
}

// restartAgent kills the agent on node with SIGKILL and waits until the
// node has started a new one.
func restartAgent(t *testing.T, node string) {
	t.Helper()
	old := agentPID(t, node)
	if out, err := exec.Command(l.Bin, "restart-agent", node).CombinedOutput(); err != nil {
		t.Fatalf("restart-agent %s: %v\n%s", node, err, out)
	}
	eventually(t, 30*time.Second, "agent restarted on "+node, func() bool {
		p := agentPID(t, node)
		return p != 0 && p != old && proc.Alive(p, "trellis-agent")
	})
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
	pods := createPods(t, "agent-kill", []string{na, nb})
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
	s.finish(t, fmt.Sprintf("stream %s (%s) -> %s (%s) across kill -9 of both agents", pods[0], na, pods[1], nb))
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

// setAgentMode changes the routing mode in the node's agent configuration
// file (the lab's stand-in for the DaemonSet's ConfigMap) and restarts the
// agent. mode "" restores the lab's mode.
func setAgentMode(t *testing.T, node, newMode string) {
	t.Helper()
	if newMode == "" {
		newMode = mode()
	}
	spec, err := labnode.LoadSpec(filepath.Join(l.Paths.Node(node), "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := labnode.WriteAgentConfig(spec, newMode); err != nil {
		t.Fatal(err)
	}
	restartAgent(t, node)
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
		pods = createPods(t, "agent-mode", []string{a, b})
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
	all := createPods(t, "agent-mode-tt", nodes)
	l.ExpectMatrix(t, all, 80, "tcp", connectivity.NewMatrix(all, true))
	if s != nil {
		s.finish(t, fmt.Sprintf("stream %s -> %s across the mode change", pods[0], pods[1]))
	}
}
