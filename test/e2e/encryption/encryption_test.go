//go:build e2e

package encryption

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// TestE2EEncryption runs every check on one lab, in an order that keeps
// the lab usable from one step to the next: the capture in the lab's
// routing mode, large packets, the strict-mode faults, a key rotation, a
// node starting afresh, the capture in the other routing modes (the agents'
// configuration changed and the agents restarted), and last the negative
// control with encryption off.
func TestE2EEncryption(t *testing.T) {
	requireEncryptedLab(t)
	start := time.Now()
	w := newWorld(t)
	labMode := l.State.Topology.Options.RoutingMode
	t.Run("capture-"+labMode, func(t *testing.T) { w.checkEncrypted(t, labMode) })
	t.Run("large-packets", w.testLargePackets)
	t.Run("strict-port-blocked", w.testPortBlocked)
	t.Run("strict-key-withdrawn", w.testKeyWithdrawn)
	t.Run("strict-kill9", w.testKill9)
	t.Run("rotation", w.testRotation)
	t.Run("strict-fresh-node", w.testFreshNode)
	for _, m := range []string{"native", "vxlan", "auto"} {
		if m == labMode {
			continue
		}
		t.Run("capture-"+m, func(t *testing.T) {
			l.SetAgentConfig(t, m, "")
			w.waitAllPairs(t, m)
			w.checkEncrypted(t, m)
		})
	}
	t.Run("control-encryption-off", func(t *testing.T) {
		l.SetAgentConfig(t, labMode, string(config.EncryptionNone))
		w.waitAllPairs(t, labMode+", encryption off")
		w.checkPlaintext(t, labMode+"-encryption-off")
	})
	figure(t, "encryption suite: %s (without the lab's bring-up)", time.Since(start).Round(time.Second))
}

// waitAllPairs waits until every cross-node pod pair answers over TCP after
// the agents restarted with a new configuration, and reports how long that
// took: a restarted userspace engine has lost its sessions, and a peer
// that still sends on one it holds is answered only once WireGuard's
// timers start a new handshake.
func (w *world) waitAllPairs(t *testing.T, what string) {
	t.Helper()
	start := time.Now()
	for _, p := range w.crossPairs() {
		w.waitReachable(t, p[0], p[1], 90*time.Second, fmt.Sprintf("%s -> %s after the agents restarted (%s)", w.pods[p[0]], w.pods[p[1]], what))
	}
	figure(t, "agents restarted (%s): every cross-node pod pair answered %s after the last agent was back", what, time.Since(start).Round(time.Millisecond))
}

// testLargePackets: the pod MTU is the underlay's minus WireGuard's 60
// bytes, a UDP datagram of exactly the pod MTU with DF crosses to a node of
// the same subnet and of the other, and a TCP transfer runs at full-size
// segments.
func (w *world) testLargePackets(t *testing.T) {
	under := linkMTU(t, "/run/netns/"+nodeHost(t, w.nodes[0]).Netns, "eth0")
	pod := linkMTU(t, w.netns(t, 0), "eth0")
	if want := under - wireguard.OverheadIPv4; pod != want {
		t.Errorf("pod MTU %d on an underlay of %d, want %d (WireGuard's %d bytes less)", pod, under, want, wireguard.OverheadIPv4)
	}
	payload := canary(t, "large")
	data := repeatTo(payload, 4<<20)
	for _, dst := range []int{w.otherSubnet(t, 0), w.sameSubnet(t, 0)} {
		if err := w.udpDF(t, 0, dst, pod-28, payload); err != nil {
			t.Error(err)
		}
		start := time.Now()
		mss, err := w.tcpTransfer(t, 0, dst, data, 30*time.Second)
		if err != nil {
			t.Error(err)
			continue
		}
		figure(t, "large packets %s -> %s: pod MTU %d (underlay %d), %d-byte UDP with DF arrived, 4 MiB over TCP at MSS %d in %s",
			w.nodes[0], w.nodes[dst], pod, under, pod-28, mss, time.Since(start).Round(time.Millisecond))
		// MSS = MTU - 40 bytes of headers, - 12 with TCP timestamps.
		if mss < pod-40-12 {
			t.Errorf("TCP to %s ran at MSS %d, want full-size segments (>= %d)", w.nodes[dst], mss, pod-52)
		}
	}
}

// sameSubnet returns the index of another node on node i's subnet.
func (w *world) sameSubnet(t *testing.T, i int) int {
	t.Helper()
	for j, n := range w.nodes {
		if j != i && l.SameSubnet(w.nodes[i], n) {
			return j
		}
	}
	t.Fatalf("no other node on %s's subnet", w.nodes[i])
	return -1
}

// linkMTU returns the MTU of ifname in the network namespace at path.
func linkMTU(t *testing.T, path, ifname string) int {
	t.Helper()
	mtu := 0
	if err := inNetnsPath(path, func() error {
		i, err := net.InterfaceByName(ifname)
		if err == nil {
			mtu = i.MTU
		}
		return err
	}); err != nil {
		t.Fatalf("%s in %s: %v", ifname, path, err)
	}
	return mtu
}

// testRotation: a new key on one node (the rotate annotation, as trellisctl
// sets it) during a TCP and UDP stream through it: the node publishes the
// new key, no agent restarts, the TCP stream is never reset and loses no
// byte; retransmitted segments and UDP loss are reported.
func (w *world) testRotation(t *testing.T) {
	dst := w.otherSubnet(t, 0)
	node := w.nodes[dst]
	oldKey, ok := wireguard.PublicKeyFromNode(getNode(t, node))
	if !ok {
		t.Fatalf("%s publishes no key", node)
	}
	pids := map[string]int{}
	for _, n := range w.nodes {
		pids[n] = l.AgentPID(t, n)
	}
	s := l.StartStream(t, w.pods[0], w.pods[dst], 19010)
	begin := time.Now()
	time.Sleep(3 * time.Second)
	value := strconv.FormatInt(time.Now().UnixNano(), 10)
	annotate(t, node, wireguard.AnnotationRotate, &value)
	var newKey string
	took := eventually(t, 30*time.Second, node+" rotates its key", func() bool {
		n := getNode(t, node)
		k, ok := wireguard.PublicKeyFromNode(n)
		newKey = wireguard.KeyID(k)
		return ok && k != oldKey && n.Annotations[wireguard.AnnotationRotated] == value
	})
	time.Sleep(time.Until(begin.Add(12 * time.Second)))
	r := s.Stop(t, "rotation")
	figure(t, "rotation on %s (key %s -> %s, published %s after the request) during a %s stream %s -> %s: TCP %d/%d bytes, "+
		"%d retransmitted segments, reset/error: %v; UDP %d/%d datagrams (%.2f%% loss), longest gap %d ms",
		node, wireguard.KeyID(oldKey), newKey, took.Round(time.Millisecond), time.Since(begin).Round(time.Second), w.nodes[0], node,
		r.TCPReceived, r.TCPSent, r.Retransmits, r.TCPErr, r.UDPReceived, r.UDPSent, r.UDPLoss, 2*r.UDPMaxGap)
	if r.TCPErr != nil || r.TCPReceived != r.TCPSent {
		t.Errorf("the TCP stream broke during the rotation: %d of %d bytes, %v", r.TCPReceived, r.TCPSent, r.TCPErr)
	}
	if r.UDPReceived == 0 || r.UDPMaxGap*2 > int64(time.Second/time.Millisecond)*10 {
		t.Errorf("UDP through the rotation: %d/%d datagrams, longest gap %d ms", r.UDPReceived, r.UDPSent, 2*r.UDPMaxGap)
	}
	for _, n := range w.nodes {
		if p := l.AgentPID(t, n); p != pids[n] {
			t.Errorf("the agent on %s restarted during the rotation (pid %d -> %d)", n, pids[n], p)
		}
	}
}
