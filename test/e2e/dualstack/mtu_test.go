//go:build e2e && dualstack

package dualstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// Per family: UDP datagrams that fill the pod MTU exactly, sent with
// fragmentation forbidden (IPv4's DF bit, IPv6's IPV6_PMTUDISC_DO: no
// fragmentation at the sender; routers never fragment IPv6), pass between
// pods on every path the mode connects, in both directions; one byte more
// is refused at the sender (EMSGSIZE). Over IPv6 the headers take 48 bytes
// (40 + 8), over IPv4 28.
func TestE2EDualStackLargeUDPNoFragmentation(t *testing.T) {
	requireAgent(t)
	pods := createPods(t, "ds-mtu", lab.Nodes())
	eachFamily(t, func(t *testing.T, f topology.ClusterFamily) {
		headers := 28
		if f.IPv6 {
			headers = 48
		}
		for i, a := range pods {
			for j, b := range pods {
				if i >= j || !reachable(lab.NodeOf(t, a), lab.NodeOf(t, b)) {
					continue
				}
				pa, pb := lab.PodNetns(t, a), lab.PodNetns(t, b)
				mtu := linkMTU(t, pa, "eth0")
				ca := noFragUDP(t, pa, lab.PodAddr(t, a, f))
				cb := noFragUDP(t, pb, lab.PodAddr(t, b, f))
				if err := udpRoundTrip(ca, cb, mtu-headers); err != nil {
					t.Errorf("%s (%s) <-> %s (%s) over %s, %d-byte datagrams (pod MTU %d): %v", a, lab.NodeOf(t, a), b, lab.NodeOf(t, b), f.Name(), mtu-headers, mtu, err)
				}
				if _, err := ca.WriteToUDP(make([]byte, mtu-headers+1), cb.LocalAddr().(*net.UDPAddr)); !errors.Is(err, syscall.EMSGSIZE) {
					t.Errorf("%s -> %s over %s, a %d-byte datagram: %v, want EMSGSIZE", a, b, f.Name(), mtu-headers+1, err)
				}
			}
		}
	})
}

// noFragUDP opens a UDP socket at addr (port chosen by the kernel) inside
// the namespace at nsPath that never fragments: IP_PMTUDISC_DO (DF set) for
// IPv4, IPV6_PMTUDISC_DO for IPv6.
func noFragUDP(t *testing.T, nsPath string, addr netip.Addr) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	framework.InNetns(t, nsPath, func() error {
		network, level, opt, val := "udp4", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO
		if addr.Is6() {
			network, level, opt, val = "udp6", unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO
		}
		c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
		if err != nil {
			return err
		}
		conn = c
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, val) }); err != nil {
			return err
		}
		return serr
	})
	t.Cleanup(func() { conn.Close() })
	return conn
}

// udpRoundTrip sends size bytes from a to b, and b echoes them back; the
// first datagrams may race neighbour resolution, so a few are tried.
func udpRoundTrip(a, b *net.UDPConn, size int) error {
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i)
	}
	buf := make([]byte, 65536)
	for attempt := 0; ; attempt++ {
		if _, err := a.WriteToUDP(msg, b.LocalAddr().(*net.UDPAddr)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		_ = b.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := b.ReadFromUDP(buf)
		if err != nil {
			if attempt < 3 {
				continue
			}
			return fmt.Errorf("no %d-byte datagram arrived: %w", size, err)
		}
		if n != size {
			return fmt.Errorf("received %d bytes, sent %d", n, size)
		}
		if _, err := b.WriteToUDP(buf[:n], from); err != nil {
			return fmt.Errorf("reply: %w", err)
		}
		_ = a.SetReadDeadline(time.Now().Add(time.Second))
		if n, _, err = a.ReadFromUDP(buf); err != nil || n != size {
			return fmt.Errorf("reply: %d bytes, %v", n, err)
		}
		return nil
	}
}

// linkMTU is the MTU of ifname inside the namespace at path.
func linkMTU(t *testing.T, path, ifname string) int {
	t.Helper()
	h, err := vns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	link, err := nh.LinkByName(ifname)
	if err != nil {
		t.Fatalf("%s in %s: %v", ifname, path, err)
	}
	return link.Attrs().MTU
}
