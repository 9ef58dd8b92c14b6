package routing

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

type fakeDP struct {
	applied []*Desired
	err     error
}

func (f *fakeDP) Underlay(ip netip.Addr) (Underlay, error) {
	return Underlay{Device: "eth0", Prefix: netip.PrefixFrom(ip, 24), MTU: 1500}, nil
}

func (f *fakeDP) Apply(_ context.Context, d *Desired) error {
	f.applied = append(f.applied, d)
	return f.err
}

func apiNode(name, ip, cidr string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ip != "" {
		n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}
	}
	if cidr != "" {
		n.Spec.PodCIDRs = []string{cidr}
	}
	return n
}

func newTestController(t *testing.T, mode config.RoutingMode, nodes ...*v1.Node) (*Controller, *fakeDP, *record.FakeRecorder, *prometheus.Registry, *int) {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range nodes {
		if err := idx.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	dp, rec, reg := &fakeDP{}, record.NewFakeRecorder(10), prometheus.NewRegistry()
	changes := 0
	c, err := New(Config{NodeName: "node1", Params: Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 1, Port: 4789}},
		Nodes: corelisters.NewNodeLister(idx), Kernel: dp, Recorder: rec, Registerer: reg, OnReadyChange: func() { changes++ }})
	if err != nil {
		t.Fatal(err)
	}
	return c, dp, rec, reg, &changes
}

func TestControllerNativeAcrossSubnetsWarnsOnce(t *testing.T) {
	c, dp, rec, m, changes := newTestController(t, config.ModeNative,
		apiNode("node1", "10.0.1.11", "10.244.1.0/24"),
		apiNode("node2", "10.0.1.12", "10.244.2.0/24"),
		apiNode("node3", "10.0.2.13", "10.244.3.0/24"),
		apiNode("node4", "", ""))
	ctx := context.Background()
	if ok, _ := c.Ready(); ok {
		t.Fatal("ready before the first sync")
	}
	for i := 0; i < 2; i++ {
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ok, reason := c.Ready(); !ok || *changes != 1 {
		t.Errorf("Ready = %v %q after syncs, readiness changes %d; want true and exactly 1 change", ok, reason, *changes)
	}
	if len(dp.applied) != 2 {
		t.Fatalf("applied %d times, want 2", len(dp.applied))
	}
	if rs := remoteRoutes(dp.applied[1]); len(rs) != 1 || rs[0].Node != "node2" {
		t.Fatalf("applied remote routes %+v; want one native route to node2", rs)
	}
	var events []string
	for len(rec.Events) > 0 {
		events = append(events, <-rec.Events)
	}
	if len(events) != 1 || !strings.Contains(events[0], "Warning "+ReasonNotOnSameSubnet) || !strings.Contains(events[0], "node3") {
		t.Errorf("events %q; want exactly one %s warning naming node3 (none for node4 registering, none repeated)", events, ReasonNotOnSameSubnet)
	}
	if err := testutil.GatherAndCompare(m, strings.NewReader(`
# HELP trellis_routing_peer_problems Remote nodes that are not programmed (unreachable in the configured mode, or their data rejected) or, encryption on, have no WireGuard key, by reason.
# TYPE trellis_routing_peer_problems gauge
trellis_routing_peer_problems{reason="PeerConflictsWithNode"} 0
trellis_routing_peer_problems{reason="PeerHasInvalidVTEPMAC"} 0
trellis_routing_peer_problems{reason="PeerHasNoNodeIP"} 0
trellis_routing_peer_problems{reason="PeerHasNoPodCIDR"} 1
trellis_routing_peer_problems{reason="PeerHasNoWireGuardKey"} 0
trellis_routing_peer_problems{reason="PeerNotOnSameSubnet"} 1
trellis_routing_peer_problems{reason="PeerPodCIDROutsideCluster"} 0
trellis_routing_peer_problems{reason="PeerPodCIDROverlapsNodeNetwork"} 0
trellis_routing_peer_problems{reason="RouteHeldByAnotherOwner"} 0
# HELP trellis_routing_routes_programmed Routes to remote pod subnets programmed, by path (native, vxlan, wireguard).
# TYPE trellis_routing_routes_programmed gauge
trellis_routing_routes_programmed{path="native"} 1
trellis_routing_routes_programmed{path="vxlan"} 0
trellis_routing_routes_programmed{path="wireguard"} 0
`), "trellis_routing_peer_problems", "trellis_routing_routes_programmed"); err != nil {
		t.Error(err)
	}
}

func TestControllerNotReadyWithoutOwnPodCIDROrOnApplyError(t *testing.T) {
	c, dp, _, _, _ := newTestController(t, config.ModeAuto, apiNode("node1", "10.0.1.11", ""))
	if err := c.Sync(context.Background()); err == nil {
		t.Error("Sync without own pod CIDR succeeded")
	}
	if ok, reason := c.Ready(); ok || !strings.Contains(reason, "pod CIDR") {
		t.Errorf("Ready = %v %q", ok, reason)
	}
	if len(dp.applied) != 0 {
		t.Errorf("applied state without a pod CIDR: %+v", dp.applied)
	}
	c2, dp2, _, _, _ := newTestController(t, config.ModeAuto, apiNode("node1", "10.0.1.11", "10.244.1.0/24"))
	dp2.err = errors.New("netlink says no")
	if err := c2.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "netlink says no") {
		t.Errorf("Sync error = %v", err)
	}
	if ok, _ := c2.Ready(); ok {
		t.Error("ready although applying failed")
	}
}

// remoteRoutes are d's routes to other nodes (not the own unreachable one).
func remoteRoutes(d *Desired) []Route {
	var out []Route
	for _, r := range d.Routes {
		if !r.Unreachable {
			out = append(out, r)
		}
	}
	return out
}

// incrementalDP records which of Apply and ApplyChanges each sync used.
type incrementalDP struct {
	fakeDP
	calls []string
}

func (f *incrementalDP) Apply(ctx context.Context, d *Desired) error {
	f.calls = append(f.calls, "full")
	return f.fakeDP.Apply(ctx, d)
}

func (f *incrementalDP) ApplyChanges(ctx context.Context, d *Desired) error {
	f.calls = append(f.calls, "changes")
	return f.fakeDP.Apply(ctx, d)
}

// The first sync lists the kernel (Apply); later ones apply changes only,
// until a full Apply is older than MaxInterval; a failed full Apply is
// repeated.
func TestControllerAppliesChangesBetweenFullSyncs(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range []*v1.Node{apiNode("node1", "10.0.1.11", "10.244.1.0/24"), apiNode("node2", "10.0.1.12", "10.244.2.0/24")} {
		if err := idx.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		maxInt time.Duration
		fail   bool
		want   string
	}{
		{"within MaxInterval", time.Hour, false, "full changes changes"},
		{"MaxInterval elapsed every time", time.Nanosecond, false, "full full full"},
		{"full apply failing", time.Hour, true, "full full full"},
	} {
		dp := &incrementalDP{}
		dp.err = map[bool]error{true: errors.New("no")}[tc.fail]
		c, err := New(Config{NodeName: "node1", Params: Params{Mode: config.ModeAuto, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 1, Port: 4789}},
			Nodes: corelisters.NewNodeLister(idx), Kernel: dp, Sync: syncrunner.Options{MaxInterval: tc.maxInt}})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			_ = c.Sync(context.Background())
			time.Sleep(time.Millisecond)
		}
		if got := strings.Join(dp.calls, " "); got != tc.want {
			t.Errorf("%s: calls %q, want %q", tc.name, got, tc.want)
		}
	}
}
