package routing

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/config"
)

// apiNodeFamilies is a Node with the given InternalIPs and pod CIDRs.
func apiNodeFamilies(name string, ips, cidrs []string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	n.Spec.PodCIDRs = cidrs
	return n
}

// underlayDP finds an underlay only for the addresses it knows.
type underlayDP struct {
	fakeDP
	known map[netip.Addr]bool
}

func (f *underlayDP) Underlay(ip netip.Addr) (Underlay, error) {
	if !f.known[ip] {
		return Underlay{}, errors.New("no interface holds " + ip.String())
	}
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	return Underlay{Device: "eth0", Prefix: netip.PrefixFrom(ip, bits), MTU: 1500}, nil
}

// An IPv6-only node is accepted: routes for its IPv6 peers, VXLAN over
// IPv6, ready.
func TestControllerIPv6OnlyNode(t *testing.T) {
	c, dp, _, _, _ := newTestController(t, config.ModeVXLAN,
		apiNodeFamilies("node1", []string{"fd74:7265:6c00:1::11"}, []string{"fd00:10:244:1::/64"}),
		apiNodeFamilies("node2", []string{"fd74:7265:6c00:2::12"}, []string{"fd00:10:244:2::/64"}))
	c.cfg.Params.VXLAN.Device6 = "trellis.vxlan6"
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if ok, reason := c.Ready(); !ok {
		t.Fatalf("IPv6-only node not ready: %s", reason)
	}
	d := dp.applied[len(dp.applied)-1]
	if d.VXLAN6 == nil || d.VXLAN != nil || len(remoteRoutes(d)) != 1 || remoteRoutes(d)[0].Dev != "trellis.vxlan6" {
		t.Errorf("desired %+v; want one route into the IPv6-underlay VXLAN device", d)
	}
	if uls := c.Underlays(); len(uls) != 1 || !uls[0].Prefix.Addr().Is6() {
		t.Errorf("underlays %+v, want the IPv6 one only", uls)
	}
}

// Readiness needs every family the node has: an IPv6 node IP whose
// interface cannot be found, or (native) an IPv6 pod CIDR without an
// IPv6 node IP, leaves a dual-stack node not ready.
func TestControllerReadinessNeedsEveryFamily(t *testing.T) {
	dual := apiNodeFamilies("node1", []string{"10.0.1.11", "fd74:7265:6c00:1::11"}, []string{"10.244.1.0/24", "fd00:10:244:1::/64"})
	c, _, _, _, _ := newTestController(t, config.ModeAuto, dual)
	dp := &underlayDP{known: map[netip.Addr]bool{netip.MustParseAddr("10.0.1.11"): true}}
	c.cfg.Kernel = dp
	if err := c.Sync(context.Background()); err == nil {
		t.Error("Sync succeeded without the IPv6 underlay")
	}
	if ok, reason := c.Ready(); ok || !strings.Contains(reason, "IPv6") {
		t.Errorf("Ready = %v %q; want not ready naming IPv6", ok, reason)
	}
	dp.known[netip.MustParseAddr("fd74:7265:6c00:1::11")] = true
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("Sync with both underlays: %v", err)
	}
	if ok, reason := c.Ready(); !ok {
		t.Errorf("not ready with both underlays: %s", reason)
	}

	v4IPOnly := apiNodeFamilies("node1", []string{"10.0.1.11"}, []string{"10.244.1.0/24", "fd00:10:244:1::/64"})
	n, _, _, _, _ := newTestController(t, config.ModeNative, v4IPOnly)
	if err := n.Sync(context.Background()); err == nil {
		t.Error("native Sync succeeded with an IPv6 pod CIDR and no IPv6 node IP")
	}
	if ok, reason := n.Ready(); ok || !strings.Contains(reason, "no IPv6 InternalIP") {
		t.Errorf("Ready = %v %q", ok, reason)
	}
	// auto carries that family by VXLAN over IPv4: ready.
	a, _, _, _, _ := newTestController(t, config.ModeAuto, v4IPOnly)
	if err := a.Sync(context.Background()); err != nil {
		t.Errorf("auto Sync: %v", err)
	}
}

// An IPv4 node whose Node also reports an IPv6 address it does not use
// (no IPv6 pod CIDR) never looks for that address's interface.
func TestControllerIPv4NodeIgnoresUnusedIPv6Address(t *testing.T) {
	c, _, _, _, _ := newTestController(t, config.ModeAuto,
		apiNodeFamilies("node1", []string{"10.0.1.11", "fd74:7265:6c00:1::11"}, []string{"10.244.1.0/24"}))
	c.cfg.Kernel = &underlayDP{known: map[netip.Addr]bool{netip.MustParseAddr("10.0.1.11"): true}}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if uls := c.Underlays(); len(uls) != 1 || !uls[0].Prefix.Addr().Is4() {
		t.Errorf("underlays %+v, want the IPv4 one only", uls)
	}
}

func TestNodeIPsPerFamily(t *testing.T) {
	n := apiNodeFamilies("n", []string{"fe80::1", "fd74::5", "10.0.0.5"}, nil)
	if NodeIP(n) != netip.MustParseAddr("10.0.0.5") || NodeIP6(n) != netip.MustParseAddr("fd74::5") || UnderlayIP(n) != NodeIP(n) {
		t.Errorf("NodeIP %s NodeIP6 %s UnderlayIP %s", NodeIP(n), NodeIP6(n), UnderlayIP(n))
	}
	v6 := apiNodeFamilies("n", []string{"fd74::5"}, nil)
	if NodeIP(v6).IsValid() || UnderlayIP(v6) != netip.MustParseAddr("fd74::5") {
		t.Errorf("IPv6-only: NodeIP %s UnderlayIP %s", NodeIP(v6), UnderlayIP(v6))
	}
	ann := &v1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationNodeIP: "fd74::9"}}}
	if NodeIP(ann).IsValid() || NodeIP6(ann) != netip.MustParseAddr("fd74::9") {
		t.Errorf("annotation: NodeIP %s NodeIP6 %s", NodeIP(ann), NodeIP6(ann))
	}
}

// clusterCIDRs without an IPv6 prefix leave a node with an IPv6 pod CIDR
// not ready, saying what to add.
func TestControllerNotReadyWithoutClusterCIDROfAFamily(t *testing.T) {
	dual := apiNodeFamilies("node1", []string{"10.0.1.11", "fd74:7265:6c00:1::11"}, []string{"10.244.1.0/24", "fd00:10:244:1::/64"})
	c, _, _, _, _ := newTestController(t, config.ModeAuto, dual)
	c.cfg.Params.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	if err := c.Sync(context.Background()); err == nil {
		t.Error("Sync succeeded")
	}
	if ok, reason := c.Ready(); ok || !strings.Contains(reason, "clusterCIDRs hold no IPv6 prefix") {
		t.Errorf("Ready = %v %q", ok, reason)
	}
	c.cfg.Params.ClusterCIDRs = append(c.cfg.Params.ClusterCIDRs, netip.MustParsePrefix("fd00:10:244::/48"))
	if err := c.Sync(context.Background()); err != nil {
		t.Errorf("Sync with both families' cluster CIDRs: %v", err)
	}
}
