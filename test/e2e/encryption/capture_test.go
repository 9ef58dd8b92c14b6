//go:build e2e

package encryption

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/capture"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// switchCapture is a capture on the lab's switch: every frame between the
// lab's hosts (nodes, router, control plane) enters it through a bridge
// port. Frames to and from the control plane (the agents' and kubelets'
// API traffic, never pod traffic) are left out, to keep the file small.
type switchCapture struct {
	c *capture.Capture
}

// startCapture starts recording the switch; snapLen 0 records whole frames.
func startCapture(t *testing.T, what string, snapLen int, maxDuration time.Duration) *switchCapture {
	t.Helper()
	c, err := capture.Start(context.Background(), capture.Options{
		Netns:       l.State.Topology.SwitchNetns,
		InboundOnly: true,
		Filter:      "not host " + l.State.Topology.ControlPlane.Addr.String(),
		File:        filepath.Join(t.TempDir(), strings.ReplaceAll(what, "/", "-")+".pcap"),
		MaxPackets:  2_000_000,
		MaxDuration: maxDuration,
		SnapLen:     snapLen,
	})
	if err != nil {
		t.Fatal(err)
	}
	sc := &switchCapture{c: c}
	t.Cleanup(func() { _, _ = c.Stop() })
	return sc
}

// stop ends the capture and counts payload and WireGuard datagrams. A
// capture that missed frames (tcpdump's packet count or duration reached,
// more than 1% dropped by the kernel) proves nothing and fails t.
func (sc *switchCapture) stop(t *testing.T, payload []byte) capture.Counts {
	t.Helper()
	st, err := sc.c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	got, err := capture.AnalyzeFile(sc.c.File(), capture.Query{Payload: payload, UDPPort: wgPort})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("switch capture: %v (tcpdump: %d captured, %d dropped by the kernel)", got, st.Captured, st.DroppedByKernel)
	if st.LimitReached || st.TimedOut {
		t.Fatalf("the capture ended early (packet count or duration reached): %+v", st)
	}
	if st.DroppedByKernel*100 > st.Captured {
		t.Fatalf("the capture lost %d of %d frames: inconclusive", st.DroppedByKernel, st.Captured)
	}
	return got
}

// transferAll sends the payload between every ordered pair of pods on
// different nodes, over TCP (64 KiB of it) and UDP (10 datagrams), and
// fails t when a transfer does not arrive.
func (w *world) transferAll(t *testing.T, payload []byte) {
	t.Helper()
	data := repeatTo(payload, 64<<10)
	dgram := repeatTo(payload, 20*len(payload))
	for _, p := range w.crossPairs() {
		if _, err := w.tcpTransfer(t, p[0], p[1], data, 10*time.Second); err != nil {
			t.Errorf("TCP: %v", err)
		}
		if got := w.udpSend(t, p[0], p[1], dgram, 10); got == 0 {
			t.Errorf("UDP %s -> %s: none of 10 datagrams arrived", w.pods[p[0]], w.pods[p[1]])
		}
	}
}

// expectAllPairs checks that every pod answers every other over TCP (agnhost
// on 80) and UDP (81): the truth table of the upstream e2e style.
func (w *world) expectAllPairs(t *testing.T) {
	t.Helper()
	l.ExpectMatrix(t, w.pods, 80, "tcp", connectivity.NewMatrix(w.pods, true))
	l.ExpectMatrix(t, w.pods, 81, "udp", connectivity.NewMatrix(w.pods, true))
}

// checkEncrypted: every pod pair answers, and a capture on the switch
// during the payload transfers finds the payload zero times and WireGuard
// datagrams.
func (w *world) checkEncrypted(t *testing.T, label string) {
	t.Helper()
	w.waitTunnels(t)
	w.expectAllPairs(t)
	payload := canary(t, label)
	sc := startCapture(t, label, 0, 2*time.Minute)
	w.transferAll(t, payload)
	got := sc.stop(t, payload)
	figure(t, "capture %s (encryption on, %d pod pairs across nodes): payload found %d times, %d WireGuard datagrams, %d frames",
		label, len(w.crossPairs()), got.PayloadHits, got.UDPToPort, got.Packets)
	if got.PayloadHits != 0 {
		t.Errorf("%s: the payload crossed the switch in plaintext %d times (%d frames)", label, got.PayloadHits, got.PayloadPackets)
	}
	if got.UDPToPort == 0 {
		t.Errorf("%s: no WireGuard datagram (UDP to %d) crossed the switch: the pod traffic did not go through the tunnel", label, wgPort)
	}
}

// waitTunnels waits until every node has the WireGuard device, has
// published its key, and routes every other node's pod CIDR through the
// device (the agents have seen each other's keys).
func (w *world) waitTunnels(t *testing.T) {
	t.Helper()
	cidrs := map[string]string{}
	for _, n := range w.nodes {
		cidrs[n] = routing.PodCIDRs(getNode(t, n))[0].String()
	}
	why := ""
	ok := func() bool {
		for _, n := range w.nodes {
			if _, ok := wireguard.PublicKeyFromNode(getNode(t, n)); !ok {
				why = n + " publishes no key"
				return false
			}
			if !hasDevice(t, n) {
				why = n + " has no " + wgDevice
				return false
			}
			for _, m := range w.nodes {
				if dev := routeDev(t, n, cidrs[m]); m != n && dev != wgDevice {
					why = fmt.Sprintf("%s routes %s (%s) through %q", n, cidrs[m], m, dev)
					return false
				}
			}
		}
		return true
	}
	start := time.Now()
	for !ok() {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("the tunnels are not up after 90 s: %s; agent log of the first node:\n%s", why, l.AgentLogs(t, w.nodes[0], 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("every node routes the others' pod CIDRs through %s (%s)", wgDevice, took.Round(time.Millisecond))
}

// checkPlaintext is the negative control: the same transfers and capture
// with encryption off must find the payload, or the capture proves nothing.
func (w *world) checkPlaintext(t *testing.T, label string) {
	t.Helper()
	w.expectAllPairs(t)
	payload := canary(t, label)
	sc := startCapture(t, label, 0, 2*time.Minute)
	w.transferAll(t, payload)
	got := sc.stop(t, payload)
	figure(t, "capture %s (encryption off, negative control): payload found %d times in %d frames, %d WireGuard datagrams, %d frames",
		label, got.PayloadHits, got.PayloadPackets, got.UDPToPort, got.Packets)
	// Every pair's TCP transfer and datagrams cross the switch at least once.
	if min := len(w.crossPairs()); got.PayloadPackets < min {
		t.Errorf("%s: the payload was seen in %d frames, want at least %d (one per pod pair): the capture does not see pod traffic",
			label, got.PayloadPackets, min)
	}
	for _, n := range w.nodes {
		if hasDevice(t, n) {
			t.Errorf("%s still has the %s device with encryption off", n, wgDevice)
		}
	}
}
