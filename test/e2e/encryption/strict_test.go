//go:build e2e

package encryption

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// attack sends the payload from pods srcs to pod dst for d: UDP datagrams
// every 20 ms to the test's server in dst, and a TCP connection attempt
// (the payload written if it connects) every 200 ms. It returns the
// datagrams and connections that reached dst.
func (w *world) attack(t *testing.T, srcs []int, dst int, payload []byte, d time.Duration) (dgrams, conns int) {
	t.Helper()
	addr, stop := w.udpListen(t, dst)
	data := repeatTo(payload, 4<<10)
	dstNS, dstIP := w.netns(t, dst), w.ip(t, dst)
	var wg sync.WaitGroup
	var connected atomic.Int64
	deadline := time.Now().Add(d)
	for _, s := range srcs {
		udp := w.udpSender(t, s, addr, false)
		srcNS := w.netns(t, s)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				_, _ = udp.Write(payload)
				time.Sleep(20 * time.Millisecond)
			}
		}()
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				_, err := tcpSend(srcNS, dstNS, dstIP, data, 200*time.Millisecond)
				if err == nil || !errors.Is(err, errConnect) && !errors.Is(err, errServer) {
					connected.Add(1)
				}
				if errors.Is(err, errServer) {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	n, _ := stop()
	return n, int(connected.Load())
}

// expectNoPlaintextAndNoAnswer checks that while pod dst's node is cut off, pod
// traffic from the other nodes to it fails and the switch sees no plaintext.
func (w *world) expectNoPlaintextAndNoAnswer(t *testing.T, label string, dst int, wantWireGuard bool) {
	t.Helper()
	var srcs []int
	for i := range w.pods {
		if i != dst {
			srcs = append(srcs, i)
		}
	}
	payload := canary(t, label)
	sc := startCapture(t, label, 0, time.Minute)
	dgrams, conns := w.attack(t, srcs, dst, payload, 4*time.Second)
	got := sc.stop(t, payload)
	figure(t, "%s: %d datagrams and %d TCP connections reached %s; switch: payload %d times, %d WireGuard datagrams",
		label, dgrams, conns, w.pods[dst], got.PayloadHits, got.UDPToPort)
	if dgrams != 0 || conns != 0 {
		t.Errorf("%s: pod traffic to %s went through (%d datagrams, %d connections), want none", label, w.nodes[dst], dgrams, conns)
	}
	if got.PayloadHits != 0 {
		t.Errorf("%s: the payload crossed the switch in plaintext %d times", label, got.PayloadHits)
	}
	if wantWireGuard && got.UDPToPort == 0 {
		t.Errorf("%s: no WireGuard datagram on the switch: the peers did not even try the tunnel", label)
	}
}

// waitReachable waits until pod src reaches pod dst over TCP again and
// returns how long that took.
func (w *world) waitReachable(t *testing.T, src, dst int, within time.Duration, what string) time.Duration {
	t.Helper()
	return eventually(t, within, what, func() bool { return w.tryTCP(src, dst, 500*time.Millisecond) == nil })
}

// testPortBlocked: the WireGuard port blocked at one node (every datagram
// to it dropped as it arrives) cuts pod traffic to it off, and nothing goes
// out in plaintext instead; unblocked, traffic resumes by itself.
func (w *world) testPortBlocked(t *testing.T) {
	dst := w.otherSubnet(t, 0)
	unblock, list := nftBlock(t, w.nodes[dst], "trellis-e2e-wgblock",
		fmt.Sprintf("chain pre { type filter hook prerouting priority -300; udp dport %d counter drop; }", wgPort))
	w.expectNoPlaintextAndNoAnswer(t, "port-blocked", dst, true)
	t.Logf("%s: %s", w.nodes[dst], list())
	unblock()
	took := w.waitReachable(t, 0, dst, 60*time.Second, "pod traffic after the WireGuard port is open again")
	figure(t, "port-blocked: traffic to %s resumed %s after the block was lifted", w.nodes[dst], took.Round(time.Millisecond))
}

// testKeyWithdrawn: a node's public key annotation removed (its agent kept
// from the API server meanwhile, so it cannot publish it again) makes the
// peers drop it as a WireGuard peer. Its pod CIDR then has only the routing
// mode's plaintext route at the peers, and the strict table must drop what
// takes it: pod traffic to the node fails, and the switch sees no plaintext.
func (w *world) testKeyWithdrawn(t *testing.T) {
	dst := w.otherSubnet(t, 0)
	node := w.nodes[dst]
	// The API server's own address and its Service address (before
	// kube-proxy's DNAT: this chain runs first).
	cp := l.State.Topology.ControlPlane.Addr.String()
	unblock, _ := nftBlock(t, node, "trellis-e2e-noapi", fmt.Sprintf(
		"chain outp { type filter hook output priority -300; ip daddr { %s, %s } tcp dport { 443, %d } drop; }",
		cp, topology.APIServiceIP, topology.APIPort))
	t.Cleanup(func() { w.ensureKey(t, node) })
	annotate(t, node, wireguard.AnnotationPublicKey, nil)
	cidr := routing.PodCIDRs(getNode(t, node))[0].String()
	for i, n := range w.nodes {
		if i == dst {
			continue
		}
		took := eventually(t, 30*time.Second, fmt.Sprintf("%s routes %s outside %s once %s's key is gone", n, cidr, wgDevice, node),
			func() bool { return routeDev(t, n, cidr) != wgDevice })
		t.Logf("%s: route to %s via %q %s after the key was withdrawn", n, cidr, routeDev(t, n, cidr), took.Round(time.Millisecond))
	}
	before := map[string]int{}
	for i, n := range w.nodes {
		if i != dst {
			before[n] = strictDrops(t, n)
		}
	}
	w.expectNoPlaintextAndNoAnswer(t, "key-withdrawn", dst, false)
	// What stopped the plaintext was the strict table: its counter grew at
	// the peers that sent to the node.
	for n, b := range before {
		d := strictDrops(t, n) - b
		figure(t, "key-withdrawn: the strict table of %s dropped %d packets to %s's pods", n, d, node)
		if d <= 0 {
			t.Errorf("%s's strict table dropped nothing while its pods sent to %s, whose key is gone", n, node)
		}
	}
	unblock()
	took := eventually(t, 90*time.Second, node+" publishes its key again once it reaches the API server", func() bool {
		_, ok := wireguard.PublicKeyFromNode(getNode(t, node))
		return ok
	})
	figure(t, "key-withdrawn: %s published its key again %s after reaching the API server", node, took.Round(time.Millisecond))
	w.waitReachable(t, 0, dst, 60*time.Second, "pod traffic once the key is back")
}

// strictDrops reads the strict table's drop counter on node.
func strictDrops(t *testing.T, node string) int {
	t.Helper()
	out, err := inNode(t, node, "nft", "list", "counter", "inet", "trellis-encrypt", "unencrypted")
	if err != nil {
		t.Fatalf("the strict table's counter: %v", err)
	}
	m := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: no packet count in %q", node, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// ensureKey makes sure node publishes a key again when a test ends early
// (its agent restarted if it has not republished within 30 s).
func (w *world) ensureKey(t *testing.T, node string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := wireguard.PublicKeyFromNode(getNode(t, node)); ok {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%s has not published its key again: restarting its agent", node)
	l.RestartAgent(t, node)
}

// rampProbe is 16 bytes of framework.Stream's TCP pattern (a counting
// byte sequence): plaintext of the stream holds it once every 256 bytes.
var rampProbe = func() []byte {
	b := make([]byte, 16)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// testKill9: agent kill -9 on both ends of a stream leaks nothing: the
// device, its routes and the strict table stay while the agent is away.
func (w *world) testKill9(t *testing.T) {
	dst := w.otherSubnet(t, 0)
	s := l.StartStream(t, w.pods[0], w.pods[dst], 19000)
	// Headers plus the first ~180 bytes of each frame: the stream's
	// pattern shows in every plaintext frame of it.
	sc := startCapture(t, "kill9", 256, 2*time.Minute)
	time.Sleep(2 * time.Second)
	start := time.Now()
	l.KillAgent(t, w.nodes[0])
	l.KillAgent(t, w.nodes[dst])
	restart := time.Since(start)
	// Time for TCP to come out of its retransmission backoff.
	time.Sleep(8 * time.Second)
	r := s.Stop(t, "kill9")
	got := sc.stop(t, rampProbe)
	figure(t, "kill -9 of the agents on %s and %s (%s until both Ready) during a stream: payload on the switch %d times, %d WireGuard datagrams; "+
		"TCP %d/%d bytes, %d retransmitted segments, error %v; UDP loss %.2f%%, longest gap %d ms",
		w.nodes[0], w.nodes[dst], restart.Round(time.Millisecond), got.PayloadHits, got.UDPToPort, r.TCPReceived, r.TCPSent, r.Retransmits,
		r.TCPErr, r.UDPLoss, 2*r.UDPMaxGap)
	if got.PayloadHits != 0 {
		t.Errorf("the stream crossed the switch in plaintext %d times during the agent restarts", got.PayloadHits)
	}
	if got.UDPToPort == 0 {
		t.Error("no WireGuard datagram on the switch during the stream")
	}
	if r.TCPErr != nil || r.TCPReceived != r.TCPSent {
		t.Errorf("the TCP stream broke across the agent restarts: %d of %d bytes, %v", r.TCPReceived, r.TCPSent, r.TCPErr)
	}
}

// testFreshNode: a node that starts afresh (its pods gone, its kernel state
// gone as after a reboot, no key file: a new key) sends no plaintext
// before its peers know its new key, and its pods' traffic works once they
// do. The lab cannot add a node to a running cluster, so the node is
// stopped, its Trellis kernel state, key file and dataplane marker removed
// as a reboot of a new machine would leave it, and started again; the
// capture runs from before the start until its pods answer.
func (w *world) testFreshNode(t *testing.T) {
	fresh := len(w.nodes) - 1
	node := w.nodes[fresh]
	oldKey, _ := wireguard.PublicKeyFromNode(getNode(t, node))
	if out, err := labCmd("stop-node", node); err != nil {
		t.Fatalf("stop-node: %v: %s", err, out)
	}
	t.Cleanup(func() { _, _ = labCmd("start-node", node) }) // refused when it runs: fine
	w.wipeNode(t, node)
	payload := canary(t, "fresh-node")
	sc := startCapture(t, "fresh-node", 0, 3*time.Minute)
	var stop atomic.Bool
	var sent, fromFresh atomic.Int64
	var firstSend atomic.Int64 // ns after start-node of the fresh pod's first datagram
	start := time.Now()
	var wg sync.WaitGroup
	peerIP, other := w.ip(t, 0), w.otherSubnet(t, fresh)
	wg.Add(2)
	go func() { // the peers' pods keep sending to the fresh node's pod
		defer wg.Done()
		for !stop.Load() {
			ip := w.podIPNow(fresh)
			for _, src := range []int{0, other} {
				if w.sendBlind(src, ip, payload) {
					sent.Add(1)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	go func() { // the fresh node's pod sends as soon as it exists
		defer wg.Done()
		for !stop.Load() {
			if w.sendBlind(fresh, peerIP, payload) {
				fromFresh.Add(1)
				firstSend.CompareAndSwap(0, int64(time.Since(start)))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	if out, err := labCmd("start-node", node); err != nil {
		stop.Store(true)
		wg.Wait()
		t.Fatalf("start-node: %v: %s", err, out)
	}
	var keyAt time.Duration
	answered := eventually(t, 3*time.Minute, node+"'s pod answers again after a fresh start", func() bool {
		if k, ok := wireguard.PublicKeyFromNode(getNode(t, node)); ok && k != oldKey && keyAt == 0 {
			keyAt = time.Since(start)
		}
		return w.tryTCP(0, fresh, 300*time.Millisecond) == nil
	})
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	got := sc.stop(t, payload)
	figure(t, "fresh node %s: new key published %s after start-node, its pod's first datagram sent after %s, the pod answered after %s; "+
		"%d datagrams sent towards it, %d from it; switch: payload %d times, %d WireGuard datagrams", node, keyAt.Round(time.Millisecond),
		time.Duration(firstSend.Load()).Round(time.Millisecond), answered.Round(time.Millisecond), sent.Load(), fromFresh.Load(),
		got.PayloadHits, got.UDPToPort)
	if got.PayloadHits != 0 {
		t.Errorf("the payload crossed the switch in plaintext %d times while %s started afresh", got.PayloadHits, node)
	}
	if keyAt == 0 {
		t.Errorf("%s answered, but never published a new key (the old one was %s)", node, wireguard.KeyID(oldKey))
	}
	if fromFresh.Load() == 0 {
		t.Errorf("the fresh node's pod never sent: the test proved nothing about its first packets")
	}
}

// wipeNode removes what a reboot of a new machine would not have: every
// Trellis nftables table and the WireGuard device of node's namespace, its
// key file, and its dataplane marker's boot (the lab's nodes share one
// kernel, so the boot id is made to name another boot).
func (w *world) wipeNode(t *testing.T, node string) {
	t.Helper()
	out, err := inNode(t, node, "nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line) // "table inet trellis-policy"
		if len(f) == 3 && strings.HasPrefix(f[2], "trellis") {
			if _, err := inNode(t, node, "nft", "delete", "table", f[1], f[2]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if hasDevice(t, node) {
		if _, err := inNode(t, node, "ip", "link", "del", wgDevice); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(l.Paths.Node(node), "fs", "var-lib-trellis")
	if err := os.Remove(filepath.Join(dir, filepath.Base(wgKeyFile))); err != nil {
		t.Fatalf("removing %s's key file: %v", node, err)
	}
	l.MarkOtherBoot(t, node)
}

// podNow returns pod i as the API has it now (nil when it cannot be read).
func (w *world) podNow(i int) *corev1.Pod {
	ns, name, _ := strings.Cut(w.pods[i], "/")
	p, err := l.CS.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return p
}

// tryTCP sends a few bytes from pod src to pod dst over TCP; an error when
// either pod does not run or the bytes do not arrive.
func (w *world) tryTCP(src, dst int, timeout time.Duration) error {
	ps, pd := w.podNow(src), w.podNow(dst)
	if ps == nil || pd == nil || pd.Status.PodIP == "" {
		return errors.New("pod not found")
	}
	srcNS, err := probe.PodNetns(ps)
	if err != nil {
		return err
	}
	dstNS, err := probe.PodNetns(pd)
	if err != nil {
		return err
	}
	_, err = tcpSend(srcNS, dstNS, pd.Status.PodIP, []byte("ping"), timeout)
	return err
}

// podIPNow is pod i's current IP ("" while it has none).
func (w *world) podIPNow(i int) string {
	if p := w.podNow(i); p != nil {
		return p.Status.PodIP
	}
	return ""
}

// sendBlind sends one datagram of payload and tries one TCP connection
// (writing the payload) from pod i to ip, if pod i runs (has a network
// namespace) yet; it reports whether it could send.
func (w *world) sendBlind(i int, ip string, payload []byte) bool {
	p := w.podNow(i)
	if ip == "" || p == nil {
		return false
	}
	path, err := probe.PodNetns(p)
	if err != nil {
		return false
	}
	sent := false
	_ = inNetnsPath(path, func() error {
		if c, err := net.Dial("udp4", net.JoinHostPort(ip, "9")); err == nil {
			_, err = c.Write(payload)
			sent = err == nil
			c.Close()
		}
		if c, err := net.DialTimeout("tcp4", net.JoinHostPort(ip, "80"), 100*time.Millisecond); err == nil {
			_, _ = c.Write(payload)
			c.Close()
		}
		return nil
	})
	return sent
}

// wgKeyFile is the agent's key file (the lab keeps the default).
const wgKeyFile = config.DefaultWireGuardKeyFile

// labCmd runs a trellis-lab command against the suite's lab.
func labCmd(args ...string) (string, error) {
	out, err := exec.Command(l.Bin, args...).CombinedOutput()
	return string(out), err
}
