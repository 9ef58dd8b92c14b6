//go:build kernel

package masq

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/netnstest"
)

func listen(t *testing.T, n *netnstest.Node, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.NS.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	}); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func route(t *testing.T, n *netnstest.Node, dst, gw string) {
	t.Helper()
	_, ipn, _ := net.ParseCIDR(dst)
	if err := n.Handle.RouteAdd(&netlink.Route{Dst: ipn, Gw: net.ParseIP(gw)}); err != nil {
		t.Fatalf("route %s: %v", dst, err)
	}
}

// sourceSeen sends from src (in a) to dst (in b) and returns the source
// address b observes.
func sourceSeen(t *testing.T, src, dst *net.UDPConn) string {
	t.Helper()
	if _, err := src.WriteToUDP([]byte("hi"), dst.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	_ = dst.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 16)
	_, from, err := dst.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return from.IP.String()
}

func TestKernelMasqueradeRealNftables(t *testing.T) {
	a, b := netnstest.NewLinkedNodes(t, "10.0.1.11/24", "10.0.1.12/24")
	a.Configure(t, "lo", "10.244.1.5/32")
	b.Configure(t, "lo", "10.244.2.5/32")
	route(t, a, "10.244.2.0/24", "10.0.1.12")
	route(t, b, "10.244.1.0/24", "10.0.1.11")

	d := Compute([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, nil, nil)
	var nft knftables.Interface
	err := a.NS.Do(func(ns.NetNS) error {
		var err error
		if nft, err = NewNFT(); err != nil {
			return err
		}
		// Twice: the second run must be a no-op, not a failure.
		if err := Apply(context.Background(), nft, d); err != nil {
			return err
		}
		return Apply(context.Background(), nft, d)
	})
	if err != nil {
		t.Fatalf("program nftables in the namespace: %v", err)
	}
	pod := listen(t, a, "10.244.1.5:7100")
	outside := listen(t, b, "10.0.1.12:7200")
	remotePod := listen(t, b, "10.244.2.5:7300")

	if got := sourceSeen(t, pod, outside); got != "10.0.1.11" {
		t.Errorf("pod -> outside the cluster seen from %s, want the node address 10.0.1.11", got)
	}
	if got := sourceSeen(t, pod, remotePod); got != "10.244.1.5" {
		t.Errorf("pod -> pod seen from %s, want the pod address (no masquerade inside the cluster)", got)
	}
	out, err := a.Exec("nft", "list", "table", "ip", TableName)
	if err != nil {
		t.Fatalf("nft list: %v %s", err, out)
	}
	t.Logf("table after two syncs:\n%s", out)
}
