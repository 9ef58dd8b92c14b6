//go:build kernel

package wgdev

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// firstHandshake bounds the wait for a tunnel's first traffic: an
// initiation that races the partner's configuration is retried after
// WireGuard's REKEY_TIMEOUT (5 s plus jitter), so two retries must fit,
// with room for a loaded CI machine.
const firstHandshake = 20 * time.Second

// Two nodes, a userspace device each, peers through SetPeers: TCP between
// their pod addresses crosses the tunnel, and Status shows it.
func TestKernelWireGuardTunnel(t *testing.T) {
	a, b := newWGPair(t)
	connect(t, a, b)
	dst := netip.AddrPortFrom(b.pod, 7000)
	b.tcpEcho(t, dst)
	took := a.waitReach(t, a.pod, dst, firstHandshake)
	t.Logf("first round trip through the tunnel after %v", took)

	st, err := a.m.Status(a.dev.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status: engine %s key %s port %d offloads %s", st.Engine, st.KeyID, st.ListenPort, st.Offloads)
	if st.Engine != config.EngineUserspace || st.ListenPort != wgPort || st.KeyID != wireguard.KeyID(st.PublicKey) {
		t.Errorf("status = %+v; want the userspace engine on port %d", st, wgPort)
	}
	if !st.Offloads.TUNVnetHdr {
		t.Errorf("offloads %s: the TUN device has no virtio-net header (TSO off)", st.Offloads)
	}
	if len(st.Peers) != 1 {
		t.Fatalf("status peers = %+v, want b", st.Peers)
	}
	p := st.Peers[0]
	if p.Node != "b" || p.PublicKey != b.publicKey(t) || p.LastHandshake.IsZero() || p.RxBytes == 0 || p.TxBytes == 0 ||
		!slices.Equal(p.AllowedIPs, []netip.Prefix{b.podCIDR}) || p.Endpoint != netip.AddrPortFrom(b.nodeIP, wgPort) {
		t.Errorf("peer status = %+v; want b with a handshake and traffic", p)
	}

	// EnsureDevice again changes nothing and keeps the peers.
	if err := a.m.EnsureDevice(context.Background(), a.dev); err != nil {
		t.Fatal(err)
	}
	if err := a.tcpRoundTrip(a.pod, dst, 2*time.Second); err != nil {
		t.Errorf("after a second EnsureDevice: %v", err)
	}
	if st2, _ := a.m.Status(a.dev.Name); len(st2.Peers) != 1 {
		t.Errorf("a second EnsureDevice changed the peers: %+v", st2.Peers)
	}

	// The interface deleted under the running engine: EnsureDevice makes
	// a new one (the routing controller then restores peers and routes).
	if out, err := a.Exec("ip", "link", "del", a.dev.Name); err != nil {
		t.Fatalf("ip link del: %v: %s", err, out)
	}
	if err := a.m.EnsureDevice(context.Background(), a.dev); err != nil {
		t.Fatalf("EnsureDevice after the interface was deleted: %v", err)
	}
	a.setPeers(t, b.peerOf(t))
	a.routeVia(t, b.podCIDR)
	a.waitReach(t, a.pod, dst, firstHandshake)
}

// Close stops wireguard-go but leaves the TUN device, its address and
// routes; a new Manager re-attaches to it and traffic resumes.
func TestKernelWireGuardRestartReattaches(t *testing.T) {
	a, b := newWGPair(t)
	connect(t, a, b)
	dst := netip.AddrPortFrom(b.pod, 7000)
	b.tcpEcho(t, dst)
	a.waitReach(t, a.pod, dst, firstHandshake)
	before, _ := a.m.Status(a.dev.Name)
	// A connection open across the restart: it pauses, it is not reset.
	conn := a.tcpConn(t, a.pod, dst)
	if err := echo(conn, "before"); err != nil {
		t.Fatal(err)
	}

	if err := a.m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	persistent, addrs, routes := a.linkState(t)
	if !persistent || !slices.Contains(addrs, "10.244.1.0/32") || !slices.Contains(routes, "10.244.2.0/24") {
		t.Fatalf("after Close: persistent %v addresses %v routes %v; want the persistent device with its address and route",
			persistent, addrs, routes)
	}
	if err := a.tcpRoundTrip(a.pod, dst, time.Second); err == nil {
		t.Error("traffic passed with no WireGuard engine running")
	}
	// Sent while no engine runs: dropped in the TUN device, retransmitted
	// by TCP once the new engine is up.
	if _, err := conn.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}

	// A UAPI socket file left behind (an agent killed with -9 leaves one)
	// does not stop the new Manager.
	staleSocket(t, a.dev.Name)
	a.start(t) // a new Manager, as after an agent restart
	a.setPeers(t, b.peerOf(t))
	took := a.waitReach(t, a.pod, dst, firstHandshake)
	t.Logf("traffic resumed %v after the new Manager configured the device", took)
	buf := make([]byte, len("during"))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "during" {
		t.Errorf("data sent during the restart: echo %q, %v", buf, err)
	}
	if err := echo(conn, "after"); err != nil {
		t.Errorf("the connection opened before the restart: %v", err)
	}
	after, err := a.m.Status(a.dev.Name)
	if err != nil {
		t.Fatal(err)
	}
	if after.PublicKey != before.PublicKey {
		t.Error("the device came back with another key")
	}
	if _, addrs, routes := a.linkState(t); len(addrs) != 1 || !slices.Contains(routes, "10.244.2.0/24") {
		t.Errorf("after re-attach: addresses %v routes %v", addrs, routes)
	}
}

// After a restart the peer still holds the session the old engine had and
// sends on it; the new engine cannot decrypt that. Unless the new engine
// starts a handshake itself, the peer only notices after WireGuard's own
// timers (about 15 s), so traffic the peer starts is lost until then.
func TestKernelWireGuardRestartReplacesPeersSession(t *testing.T) {
	a, b := newWGPair(t)
	connect(t, a, b)
	dst := netip.AddrPortFrom(a.pod, 7003)
	a.tcpEcho(t, dst)
	b.waitReach(t, b.pod, dst, firstHandshake) // b now holds a session with a
	if err := a.m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// A real restart takes far longer than this. A peer ignores an
	// initiation that follows the previous one from the same key within
	// 20 ms (flood limit) or within the same ~17 ms of its whitened
	// timestamp (replay), so a restart that fast loses its greeting to
	// WireGuard's 5-s retry.
	time.Sleep(100 * time.Millisecond)
	a.start(t)
	a.setPeers(t, b.peerOf(t))
	// Only b sends: a answers what it receives and starts nothing else.
	took := b.waitReach(t, b.pod, dst, 4*time.Second)
	t.Logf("the peer's traffic reached the restarted engine %v after it was configured", took)
}

// Adding and removing another prefix of a peer does not interrupt a flow to
// its first prefix; the added prefix is reachable, the removed one is not.
func TestKernelWireGuardAllowedIPsPerPrefix(t *testing.T) {
	a, b := newWGPair(t)
	extra := netip.MustParsePrefix("10.244.3.0/24")
	extraPod := netip.MustParseAddr("10.244.3.5")
	b.Configure(t, "lo", extraPod.String()+"/32")
	connect(t, a, b)
	a.routeVia(t, extra)
	dst := netip.AddrPortFrom(b.pod, 7001)
	b.udpEcho(t, dst)
	extraDst := netip.AddrPortFrom(extraPod, 7000)
	b.tcpEcho(t, extraDst)
	b.tcpEcho(t, netip.AddrPortFrom(b.pod, 7000))
	a.waitReach(t, a.pod, netip.AddrPortFrom(b.pod, 7000), firstHandshake)
	if err := a.tcpRoundTrip(a.pod, extraDst, time.Second); err == nil {
		t.Fatal("reached 10.244.3.5 before the peer had that prefix")
	}

	stop := a.udpFlow(t, a.pod, dst, 2*time.Millisecond)
	for i := range 5 {
		a.setPeers(t, b.peerOf(t, b.podCIDR, extra))
		if err := a.tcpRoundTrip(a.pod, extraDst, 3*time.Second); err != nil {
			t.Errorf("round %d: added prefix %s not reachable: %v", i, extra, err)
		}
		a.setPeers(t, b.peerOf(t, b.podCIDR))
		if err := a.tcpRoundTrip(a.pod, extraDst, time.Second); err == nil {
			t.Errorf("round %d: removed prefix %s still reachable", i, extra)
		}
		st, err := a.m.Status(a.dev.Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Peers) != 1 || !slices.Equal(st.Peers[0].AllowedIPs, []netip.Prefix{b.podCIDR}) {
			t.Errorf("round %d: peers after the removal = %+v; want only b with %s (no tombstone left)", i, st.Peers, b.podCIDR)
		}
	}
	sent, received := stop()
	t.Logf("flow to %s during 5 prefix additions and removals: %d sent, %d echoed", dst, sent, received)
	if sent < 100 || received != sent {
		t.Errorf("flow to the unchanged prefix lost %d of %d datagrams", sent-received, sent)
	}
}

// A removed peer is unreachable; a rotated key (RotateKey + EnsureDevice)
// breaks the tunnel until the partner learns the new key, then traffic
// resumes.
func TestKernelWireGuardPeerRemovalAndKeyRotation(t *testing.T) {
	a, b := newWGPair(t)
	connect(t, a, b)
	dst := netip.AddrPortFrom(b.pod, 7000)
	b.tcpEcho(t, dst)
	a.waitReach(t, a.pod, dst, firstHandshake)

	a.setPeers(t)
	if err := a.tcpRoundTrip(a.pod, dst, 2*time.Second); err == nil {
		t.Fatal("traffic passed to a removed peer")
	}
	if st, _ := a.m.Status(a.dev.Name); len(st.Peers) != 0 {
		t.Fatalf("peers after removing all: %+v", st.Peers)
	}
	a.setPeers(t, b.peerOf(t))
	a.waitReach(t, a.pod, dst, firstHandshake)

	oldKey := b.publicKey(t)
	if _, err := wireguard.RotateKey(b.keyFile); err != nil {
		t.Fatal(err)
	}
	if err := b.m.EnsureDevice(context.Background(), b.dev); err != nil {
		t.Fatal(err)
	}
	newKey := b.publicKey(t)
	if newKey == oldKey {
		t.Fatal("EnsureDevice did not pick up the rotated key file")
	}
	if st, _ := b.m.Status(b.dev.Name); len(st.Peers) != 1 {
		t.Errorf("key rotation changed b's peers: %+v", st.Peers)
	}
	if err := a.tcpRoundTrip(a.pod, dst, 2*time.Second); err == nil {
		t.Error("traffic passed while a still had b's old key")
	}
	a.setPeers(t, b.peerOf(t))
	st, _ := a.m.Status(a.dev.Name)
	if len(st.Peers) != 1 || st.Peers[0].PublicKey != newKey {
		t.Fatalf("a's peers after the update = %+v; want only b's new key", st.Peers)
	}
	took := a.waitReach(t, a.pod, dst, firstHandshake)
	t.Logf("traffic resumed %v after a learned b's new key", took)
}

// Engine selection: kernel errors clearly without the module, auto falls
// back to userspace, a foreign interface of the same name is refused, and
// RemoveDevice deletes the TUN device.
func TestKernelWireGuardEngines(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	keyFile := t.TempDir() + "/wireguard.key"
	m, err := New(Options{KeyFile: keyFile, NetnsPath: n.NS.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx := context.Background()
	dev := wireguard.Device{Name: devName("e"), Port: wgPort, MTU: 1440, Addr: netip.MustParsePrefix("10.244.1.0/32")}
	t.Cleanup(func() { _ = m.RemoveDevice(ctx, dev.Name) })

	_, kernelErr := n.Exec("ip", "link", "add", "wgprobe0", "type", "wireguard")
	hasModule := kernelErr == nil
	if hasModule {
		_, _ = n.Exec("ip", "link", "del", "wgprobe0")
	}

	dev.Engine = config.EngineKernel
	err = m.EnsureDevice(ctx, dev)
	switch {
	case !hasModule && (err == nil || !strings.Contains(err.Error(), "kernel module")):
		t.Errorf("engine kernel without the module: err = %v, want a clear error", err)
	case hasModule && err != nil:
		t.Errorf("engine kernel with the module: %v", err)
	}
	_ = m.RemoveDevice(ctx, dev.Name)

	dev.Engine = config.EngineAuto
	if err := m.EnsureDevice(ctx, dev); err != nil {
		t.Fatalf("engine auto: %v", err)
	}
	st, err := m.Status(dev.Name)
	if err != nil {
		t.Fatal(err)
	}
	want := config.EngineUserspace
	if hasModule {
		want = config.EngineKernel
	}
	if st.Engine != want {
		t.Errorf("engine auto chose %s, want %s (kernel module present: %v)", st.Engine, want, hasModule)
	}
	if err := m.RemoveDevice(ctx, dev.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Handle.LinkByName(dev.Name); err == nil {
		t.Error("RemoveDevice left the interface")
	}
	if err := m.RemoveDevice(ctx, dev.Name); err != nil {
		t.Errorf("RemoveDevice of an absent device: %v", err)
	}

	// A foreign interface of that name is neither adopted nor removed.
	if err := n.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev.Name}, PeerName: dev.Name + "p"}); err != nil {
		t.Fatal(err)
	}
	dev.Engine = config.EngineUserspace
	if err := m.EnsureDevice(ctx, dev); err == nil || !strings.Contains(err.Error(), "not a WireGuard device") {
		t.Errorf("EnsureDevice over a veth: err = %v, want a refusal", err)
	}
	if err := m.RemoveDevice(ctx, dev.Name); err == nil {
		t.Error("RemoveDevice removed a veth")
	}
	if _, err := n.Handle.LinkByName(dev.Name); err != nil {
		t.Errorf("the veth is gone: %v", err)
	}
}
