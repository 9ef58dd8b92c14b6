//go:build kernel

package wgdev

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/wireguard"
)

const wgPort = 51871

// wgNode is a node namespace running a userspace WireGuard device.
type wgNode struct {
	*netnstest.Node
	name    string // node name
	dev     wireguard.Device
	keyFile string
	m       *Manager
	nodeIP  netip.Addr
	podCIDR netip.Prefix
	pod     netip.Addr // an address of the pod CIDR on lo
}

// devName is a device name unique to this test process: the UAPI socket
// directory is shared by every namespace of the mount namespace.
func devName(suffix string) string {
	return fmt.Sprintf("wgk%d%s", os.Getpid()%100000, suffix)
}

// newWGPair makes two linked node namespaces, each with a pod address on
// lo and a running userspace WireGuard device (no peers, no routes yet).
func newWGPair(t *testing.T) (a, b *wgNode) {
	t.Helper()
	na, nb := netnstest.NewLinkedNodes(t, "10.0.1.11/24", "10.0.1.12/24")
	a = &wgNode{Node: na, name: "a", nodeIP: netip.MustParseAddr("10.0.1.11"),
		podCIDR: netip.MustParsePrefix("10.244.1.0/24"), pod: netip.MustParseAddr("10.244.1.5")}
	b = &wgNode{Node: nb, name: "b", nodeIP: netip.MustParseAddr("10.0.1.12"),
		podCIDR: netip.MustParsePrefix("10.244.2.0/24"), pod: netip.MustParseAddr("10.244.2.5")}
	dir := t.TempDir()
	for _, n := range []*wgNode{a, b} {
		n.Configure(t, "lo", n.pod.String()+"/32")
		n.keyFile = filepath.Join(dir, n.name, "wireguard.key")
		n.dev = wireguard.Device{Name: devName(n.name), Port: wgPort, MTU: 1440,
			Addr: netip.PrefixFrom(n.podCIDR.Addr(), 32), Engine: config.EngineUserspace}
		n.start(t)
		t.Cleanup(func() {
			if err := n.m.RemoveDevice(context.Background(), n.dev.Name); err != nil {
				t.Errorf("RemoveDevice %s: %v", n.dev.Name, err)
			}
			_ = n.m.Close()
		})
	}
	return a, b
}

// start runs a new Manager for the node and ensures its device.
func (n *wgNode) start(t *testing.T) {
	t.Helper()
	m, err := New(Options{KeyFile: n.keyFile, NetnsPath: n.NS.Path()})
	if err != nil {
		t.Fatal(err)
	}
	n.m = m
	if err := m.EnsureDevice(context.Background(), n.dev); err != nil {
		t.Fatalf("EnsureDevice on %s: %v", n.name, err)
	}
}

// publicKey is the key the node's device has now.
func (n *wgNode) publicKey(t *testing.T) wgtypes.Key {
	t.Helper()
	st, err := n.m.Status(n.dev.Name)
	if err != nil {
		t.Fatal(err)
	}
	return st.PublicKey
}

// peerOf is the desired peer for n as its partner sees it.
func (n *wgNode) peerOf(t *testing.T, cidrs ...netip.Prefix) wireguard.Peer {
	t.Helper()
	if len(cidrs) == 0 {
		cidrs = []netip.Prefix{n.podCIDR}
	}
	return wireguard.Peer{Node: n.name, PublicKey: n.publicKey(t), Endpoint: netip.AddrPortFrom(n.nodeIP, wgPort), AllowedIPs: cidrs}
}

func (n *wgNode) setPeers(t *testing.T, peers ...wireguard.Peer) {
	t.Helper()
	if err := n.m.SetPeers(context.Background(), n.dev.Name, peers); err != nil {
		t.Fatalf("SetPeers on %s: %v", n.name, err)
	}
}

// routeVia routes dst through the node's WireGuard device (what the
// routing controller does for a peer's pod CIDR).
func (n *wgNode) routeVia(t *testing.T, dst netip.Prefix) {
	t.Helper()
	link, err := n.Handle.LinkByName(n.dev.Name)
	if err != nil {
		t.Fatal(err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}}
	if err := n.Handle.RouteReplace(r); err != nil {
		t.Fatalf("route %s dev %s: %v", dst, n.dev.Name, err)
	}
}

// connect wires a and b as peers with routes to each other's pod CIDR.
func connect(t *testing.T, a, b *wgNode) {
	t.Helper()
	a.setPeers(t, b.peerOf(t))
	b.setPeers(t, a.peerOf(t))
	a.routeVia(t, b.podCIDR)
	b.routeVia(t, a.podCIDR)
}

// inNS runs fn in the node's namespace (sockets made there stay there).
func (n *wgNode) inNS(t *testing.T, fn func() error) {
	t.Helper()
	if err := ns.WithNetNSPath(n.NS.Path(), func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatal(err)
	}
}

// tcpEcho serves a TCP echo on addr inside the node until the test ends.
func (n *wgNode) tcpEcho(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	var l net.Listener
	n.inNS(t, func() (err error) {
		l, err = net.Listen("tcp4", addr.String())
		return err
	})
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// tcpRoundTrip dials dst from src inside the node, sends a line and reads
// it back, within timeout.
func (n *wgNode) tcpRoundTrip(src netip.Addr, dst netip.AddrPort, timeout time.Duration) error {
	var c net.Conn
	err := ns.WithNetNSPath(n.NS.Path(), func(ns.NetNS) (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err = d.Dial("tcp4", dst.String())
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := []byte("through the tunnel\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != string(msg) {
		return fmt.Errorf("echo %q, sent %q", buf, msg)
	}
	return nil
}

// waitReach retries a TCP round trip until it works or within passes.
func (n *wgNode) waitReach(t *testing.T, src netip.Addr, dst netip.AddrPort, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < within {
		if err = n.tcpRoundTrip(src, dst, time.Second); err == nil {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s cannot reach %s from %s within %v: %v", n.name, dst, src, within, err)
	return 0
}

// udpEcho echoes UDP datagrams on addr inside the node until the test ends.
func (n *wgNode) udpEcho(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	var c *net.UDPConn
	n.inNS(t, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	})
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort(buf[:k], from)
		}
	}()
}

// udpFlow sends numbered datagrams from src to dst every interval and
// counts the echoes, until stop is called; stop returns sent and received.
func (n *wgNode) udpFlow(t *testing.T, src netip.Addr, dst netip.AddrPort, interval time.Duration) (stop func() (sent, received int)) {
	t.Helper()
	var c *net.UDPConn
	n.inNS(t, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		return err
	})
	var received atomic.Int64
	seen := make(map[uint64]bool)
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			if k >= 8 {
				mu.Lock()
				if s := binary.BigEndian.Uint64(buf); !seen[s] {
					seen[s] = true
					received.Add(1)
				}
				mu.Unlock()
			}
		}
	}()
	quit := make(chan struct{})
	var sent atomic.Int64
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		msg := make([]byte, 64)
		for seq := uint64(0); ; seq++ {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(msg, seq)
			if _, err := c.WriteToUDPAddrPort(msg, dst); err == nil {
				sent.Add(1)
			}
		}
	}()
	return func() (int, int) {
		close(quit)
		<-senderDone
		time.Sleep(500 * time.Millisecond) // echoes in flight
		c.Close()
		<-done
		return int(sent.Load()), int(received.Load())
	}
}

// linkState returns the device's persistence flag, addresses and routes.
func (n *wgNode) linkState(t *testing.T) (persistent bool, addrs []string, routes []string) {
	t.Helper()
	link, err := n.Handle.LinkByName(n.dev.Name)
	if err != nil {
		t.Fatalf("device %s is gone: %v", n.dev.Name, err)
	}
	tt, ok := link.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("device %s is a %s, want a TUN device", n.dev.Name, link.Type())
	}
	as, err := n.Handle.AddrList(link, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		addrs = append(addrs, a.IPNet.String())
	}
	rs, err := n.Handle.RouteList(link, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Dst != nil {
			routes = append(routes, r.Dst.String())
		}
	}
	return !tt.NonPersist, addrs, routes
}

// staleSocket leaves a UAPI socket file for name that nobody listens on.
func staleSocket(t *testing.T, name string) {
	t.Helper()
	path := "/var/run/wireguard/" + name + ".sock"
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatalf("stale socket %s: %v", path, err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket %s not left: %v", path, err)
	}
}

// tcpConn opens a TCP connection from src to dst inside the node, closed
// when the test ends.
func (n *wgNode) tcpConn(t *testing.T, src netip.Addr, dst netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	n.inNS(t, func() (err error) {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err = d.Dial("tcp4", dst.String())
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// echo writes msg on an echo connection and reads it back within 10 s
// (long enough for TCP to retransmit across a pause).
func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, sent %q", buf, msg)
	}
	return nil
}
