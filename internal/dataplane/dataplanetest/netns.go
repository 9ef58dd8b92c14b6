// Package dataplanetest gives tier-1 tests a throwaway network namespace
// that looks like a node: an "underlay" interface with an address.
package dataplanetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
)

// Node is a network namespace with interface ul0 (a veth whose peer ul0p
// stays in the namespace: this kernel has no dummy driver) holding Addr.
type Node struct {
	NS     ns.NetNS
	Handle *netlink.Handle
	// Name is the namespace's name under /var/run/netns (for `ip netns exec`).
	Name string
}

// NewNode creates the namespace; it is removed in t.Cleanup. It fails the
// test loudly when not root.
func NewNode(t *testing.T, addr string) *Node {
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
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0", MTU: 1500}, PeerName: "ul0p"}); err != nil {
		t.Fatalf("add ul0: %v", err)
	}
	link, err := h.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(link, a); err != nil {
		t.Fatalf("address ul0: %v", err)
	}
	for _, l := range []string{"lo", "ul0", "ul0p"} {
		ll, err := h.LinkByName(l)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(ll); err != nil {
			t.Fatal(err)
		}
	}
	return &Node{NS: netns, Handle: h, Name: filepath.Base(netns.Path())}
}
