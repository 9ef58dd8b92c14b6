//go:build e2e

package framework

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

	"github.com/trellisnet/trellis/internal/netnstest"
)

// NetlinkAt opens a netlink handle inside the network namespace at path,
// closed when t ends.
func NetlinkAt(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	h, err := vns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open netns %s: %v", path, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink in %s: %v", path, err)
	}
	t.Cleanup(nh.Close)
	return nh
}

// LinkMTU returns the MTU of ifname inside the network namespace at path.
func LinkMTU(t testing.TB, path, ifname string) int {
	t.Helper()
	link, err := NetlinkAt(t, path).LinkByName(ifname)
	if err != nil {
		t.Fatalf("%s in %s: %v", ifname, path, err)
	}
	return link.Attrs().MTU
}

// FullSizeUDP checks one pair of pods, a (network namespace nsA, address
// addrA) and b: UDP datagrams that fill a's pod MTU (eth0's) exactly, less
// the IP and UDP headers (28 bytes over IPv4, 48 over IPv6), sent with
// fragmentation forbidden (netnstest.DFUDP: IPv4's DF bit, IPv6's
// IPV6_PMTUDISC_DO), go from a to b and back; one byte more is refused at
// a's sender (EMSGSIZE). Failures are reported with t.Errorf after what
// (the pair, and the family where it matters).
func FullSizeUDP(t *testing.T, what, nsA string, addrA netip.Addr, nsB string, addrB netip.Addr) {
	t.Helper()
	headers := 28
	if addrA.Is6() {
		headers = 48
	}
	mtu := LinkMTU(t, nsA, "eth0")
	ca := netnstest.DFUDP(t, nsA, netip.AddrPortFrom(addrA, 0).String())
	cb := netnstest.DFUDP(t, nsB, netip.AddrPortFrom(addrB, 0).String())
	if err := UDPRoundTrip(ca, cb, mtu-headers); err != nil {
		t.Errorf("%s, %d-byte datagrams, fragmentation forbidden (pod MTU %d): %v", what, mtu-headers, mtu, err)
	}
	if _, err := ca.WriteToUDP(make([]byte, mtu-headers+1), cb.LocalAddr().(*net.UDPAddr)); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("%s, a %d-byte datagram (pod MTU %d), fragmentation forbidden: %v, want EMSGSIZE", what, mtu-headers+1, mtu, err)
	}
}

// UDPRoundTrip sends size bytes from a to b, and b echoes them back; the
// first datagrams may race neighbour resolution, so a few are tried.
func UDPRoundTrip(a, b *net.UDPConn, size int) error {
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
