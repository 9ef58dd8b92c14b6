// Package netnstest gives tier-1 tests throwaway network namespaces
// that look like nodes: an "underlay" interface ul0 with an address.
package netnstest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Node is a network namespace with interface ul0.
type Node struct {
	NS     ns.NetNS
	Handle *netlink.Handle
	// Name is the namespace's name under /var/run/netns (for `ip netns exec`).
	Name string
}

func newNS(t *testing.T) *Node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("TestKernel* tests need root (real network namespaces); run them as root via make test-kernel")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	h, err := netlink.NewHandleAt(vns.NsHandle(int(netns.Fd())))
	if err != nil {
		t.Fatalf("netlink handle in netns: %v", err)
	}
	t.Cleanup(func() {
		h.Close()
		netns.Close()
		_ = testutils.UnmountNS(netns)
	})
	return &Node{NS: netns, Handle: h, Name: filepath.Base(netns.Path())}
}

// NewNode creates a namespace whose ul0 holds addr (a veth whose peer ul0p
// stays in the namespace: this kernel has no dummy driver). It is removed in
// t.Cleanup. It fails the test loudly when not root.
func NewNode(t *testing.T, addr string) *Node {
	t.Helper()
	n := newNS(t)
	if err := n.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0", MTU: 1500}, PeerName: "ul0p"}); err != nil {
		t.Fatalf("add ul0: %v", err)
	}
	n.setUp(t, "ul0p")
	n.Configure(t, "ul0", addr)
	return n
}

// NewLinkedNodes creates two namespaces whose ul0 interfaces are the two
// ends of one veth (one L2 segment), holding addrA and addrB.
func NewLinkedNodes(t *testing.T, addrA, addrB string) (*Node, *Node) {
	t.Helper()
	a, b := newNS(t), newNS(t)
	if err := a.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0", MTU: 1500},
		PeerName: "ul0b", PeerNamespace: netlink.NsFd(int(b.NS.Fd()))}); err != nil {
		t.Fatalf("add veth between namespaces: %v", err)
	}
	peer, err := b.Handle.LinkByName("ul0b")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Handle.LinkSetName(peer, "ul0"); err != nil {
		t.Fatal(err)
	}
	a.Configure(t, "ul0", addrA)
	b.Configure(t, "ul0", addrB)
	return a, b
}

// Configure adds addr to link and sets it and lo up.
func (n *Node) Configure(t *testing.T, link, addr string) {
	t.Helper()
	l, err := n.Handle.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Handle.AddrAdd(l, a); err != nil {
		t.Fatalf("address %s: %v", link, err)
	}
	n.setUp(t, "lo")
	n.setUp(t, link)
}

func (n *Node) setUp(t *testing.T, name string) {
	t.Helper()
	l, err := n.Handle.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Handle.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *Node) Exec(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// DFUDP opens a UDP socket inside the namespace at nsPath bound to addr
// ("IP:port" or "[IPv6]:port", port 0 for any) with path MTU discovery
// "do" (IPv4: DF set; both families: oversize datagrams fail with EMSGSIZE
// instead of being fragmented). It is closed in t.Cleanup.
func DFUDP(t *testing.T, nsPath, addr string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		ap := netip.MustParseAddrPort(addr)
		network, level, opt, val := "udp4", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO
		if ap.Addr().Is6() {
			network, level, opt, val = "udp6", unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO
		}
		c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return err
		}
		conn = c
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), level, opt, val)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		t.Fatalf("DF UDP socket %s in %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// NewBridgedNodes creates one namespace per address whose ul0 holds that
// address, all on one L2 segment: a switch namespace (returned first)
// holding bridge br0, with each node's ul0 a veth whose peer is a port of
// br0. Everything is removed in t.Cleanup.
func NewBridgedNodes(t *testing.T, addrs ...string) (*Node, []*Node) {
	t.Helper()
	sw := newNS(t)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", MTU: 1500}}
	if err := sw.Handle.LinkAdd(br); err != nil {
		t.Fatalf("add bridge br0: %v", err)
	}
	sw.setUp(t, "br0")
	bridge, err := sw.Handle.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*Node, 0, len(addrs))
	for i, a := range addrs {
		n := newNS(t)
		port := fmt.Sprintf("p%d", i)
		if err := n.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0", MTU: 1500},
			PeerName: port, PeerNamespace: netlink.NsFd(int(sw.NS.Fd()))}); err != nil {
			t.Fatalf("add veth to the switch: %v", err)
		}
		l, err := sw.Handle.LinkByName(port)
		if err != nil {
			t.Fatal(err)
		}
		if err := sw.Handle.LinkSetMaster(l, bridge); err != nil {
			t.Fatalf("%s into br0: %v", port, err)
		}
		sw.setUp(t, port)
		n.Configure(t, "ul0", a)
		nodes = append(nodes, n)
	}
	return sw, nodes
}
