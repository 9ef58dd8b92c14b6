package routing

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/config"
)

var (
	t0          = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clusterCIDR = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
)

func vPeer(name, ip, cidr, mac string, age int) Peer {
	p := Peer{Name: name, VTEPMAC: mac, Created: t0.Add(time.Duration(age) * time.Minute)}
	if ip != "" {
		p.NodeIP = netip.MustParseAddr(ip)
	}
	if cidr != "" {
		p.PodCIDRs = []netip.Prefix{netip.MustParsePrefix(cidr)}
	}
	return p
}

func vLocal() LocalNode {
	return LocalNode{
		Name: "node1", NodeIP: netip.MustParseAddr("10.0.1.11"),
		Underlay: Underlay{Device: "eth0", Prefix: netip.MustParsePrefix("10.0.1.11/24"), MTU: 1500,
			Connected: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("172.17.0.0/16")}},
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
	}
}

// Every peer's data is checked on its own and against every other node;
// a rejected peer gets nothing programmed in any mode, and of two
// conflicting peers the earlier-created one keeps its routes.
func TestComputeRejectsImplausibleAndConflictingPeers(t *testing.T) {
	good := vPeer("good", "10.0.2.20", "10.244.20.0/24", "", 0)
	cases := []struct {
		name   string
		peers  []Peer
		cidrs  []netip.Prefix
		reject map[string]string // node -> reason
	}{
		{"plausible peers are all accepted", []Peer{good, vPeer("n2", "10.0.1.12", "10.244.2.0/24", "", 1)}, clusterCIDR, nil},
		{"pod CIDR outside the cluster CIDRs", []Peer{good, vPeer("evil", "10.0.2.21", "10.96.0.0/24", "", 1)}, clusterCIDR,
			map[string]string{"evil": ReasonPodCIDROutsideCluster}},
		{"no cluster CIDRs configured: no range check", []Peer{vPeer("wide", "10.0.2.21", "10.96.0.0/24", "", 1)}, nil, nil},
		{"default route as pod CIDR", []Peer{good, vPeer("evil", "10.0.2.21", "0.0.0.0/0", "", 1)}, nil,
			map[string]string{"evil": ReasonPodCIDROverlapsNode}},
		{"pod CIDR over this node's underlay subnet", []Peer{vPeer("evil", "10.0.2.21", "10.0.1.0/25", "", 1)}, nil,
			map[string]string{"evil": ReasonPodCIDROverlapsNode}},
		{"pod CIDR over another connected subnet", []Peer{vPeer("evil", "10.0.2.21", "172.17.3.0/24", "", 1)}, nil,
			map[string]string{"evil": ReasonPodCIDROverlapsNode}},
		{"pod CIDR overlapping this node's pod CIDR", []Peer{vPeer("evil", "10.0.2.21", "10.244.1.128/25", "", -5)}, clusterCIDR,
			map[string]string{"evil": ReasonConflict}},
		{"this node's VTEP MAC", []Peer{vPeer("evil", "10.0.2.21", "10.244.21.0/24", VTEPMAC("node1"), -5)}, clusterCIDR,
			map[string]string{"evil": ReasonConflict}},
		{"this node's IP", []Peer{vPeer("evil", "10.0.1.11", "10.244.21.0/24", "", -5)}, clusterCIDR,
			map[string]string{"evil": ReasonConflict}},
		{"node IP inside this node's pod CIDR", []Peer{vPeer("evil", "10.244.1.7", "10.244.21.0/24", "", -5)}, clusterCIDR,
			map[string]string{"evil": ReasonConflict}},
		{"a younger node with an older one's VTEP MAC", []Peer{vPeer("old", "10.0.2.20", "10.244.20.0/24", "0e:00:00:00:00:20", 0),
			vPeer("young", "10.0.2.21", "10.244.21.0/24", "0E:00:00:00:00:20", 1)}, clusterCIDR,
			map[string]string{"young": ReasonConflict}},
		{"an older node keeps its MAC whatever the list order", []Peer{vPeer("young", "10.0.2.21", "10.244.21.0/24", "0e:00:00:00:00:20", 1),
			vPeer("old", "10.0.2.20", "10.244.20.0/24", "0e:00:00:00:00:20", 0)}, clusterCIDR,
			map[string]string{"young": ReasonConflict}},
		{"a younger node with an older one's derived MAC", []Peer{good, vPeer("young", "10.0.2.21", "10.244.21.0/24", VTEPMAC("good"), 1)}, clusterCIDR,
			map[string]string{"young": ReasonConflict}},
		{"the same node IP", []Peer{good, vPeer("young", "10.0.2.20", "10.244.21.0/24", "", 1)}, clusterCIDR,
			map[string]string{"young": ReasonConflict}},
		{"overlapping pod CIDRs (same VTEP address)", []Peer{good, vPeer("young", "10.0.2.21", "10.244.20.0/25", "", 1)}, clusterCIDR,
			map[string]string{"young": ReasonConflict}},
		{"pod CIDR holding an older node's IP", []Peer{vPeer("old", "10.0.2.20", "10.244.20.0/24", "", 0),
			vPeer("young", "10.0.2.21", "10.0.2.20/32", "", 1)}, nil,
			map[string]string{"young": ReasonConflict}},
		{"node IP inside an older node's pod CIDR", []Peer{good, vPeer("young", "10.244.20.9", "10.244.21.0/24", "", 1)}, clusterCIDR,
			map[string]string{"young": ReasonConflict}},
		{"same creation time: the lower name keeps it", []Peer{vPeer("b", "10.0.2.20", "10.244.20.0/24", "0e:00:00:00:00:20", 0),
			vPeer("a", "10.0.2.21", "10.244.21.0/24", "0e:00:00:00:00:20", 0)}, clusterCIDR,
			map[string]string{"b": ReasonConflict}},
		{"a rejected peer claims nothing", []Peer{vPeer("old", "10.0.2.20", "10.244.20.0/24", "", 0),
			vPeer("mid", "10.0.2.20", "10.244.22.0/24", "", 1), vPeer("young", "10.0.2.22", "10.244.22.0/24", "", 2)}, clusterCIDR,
			map[string]string{"mid": ReasonConflict}},
		{"multicast VTEP MAC", []Peer{vPeer("evil", "10.0.2.21", "10.244.21.0/24", "ff:ff:ff:ff:ff:ff", 0)}, clusterCIDR,
			map[string]string{"evil": ReasonBadVTEPMAC}},
		{"all-zero VTEP MAC", []Peer{vPeer("evil", "10.0.2.21", "10.244.21.0/24", "00:00:00:00:00:00", 0)}, clusterCIDR,
			map[string]string{"evil": ReasonBadVTEPMAC}},
	}
	for _, c := range cases {
		for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto} {
			t.Run(c.name+"/"+string(mode), func(t *testing.T) {
				d := Compute(vLocal(), c.peers, Params{Mode: mode, VXLAN: config.VXLAN{Device: "vx"}, ClusterCIDRs: c.cidrs})
				got := map[string]string{}
				for _, p := range d.Problems {
					if p.Reason != ReasonNotOnSameSubnet {
						got[p.Node] = p.Reason
					}
				}
				if len(got) != len(c.reject) {
					t.Errorf("problems %+v, want rejections %v", d.Problems, c.reject)
				}
				for node, reason := range c.reject {
					if got[node] != reason {
						t.Errorf("node %s: reason %q, want %q (problems %+v)", node, got[node], reason, d.Problems)
					}
				}
				for _, r := range d.Routes {
					if _, bad := c.reject[r.Node]; bad {
						t.Errorf("route to rejected node %s programmed: %+v", r.Node, r)
					}
				}
				for _, e := range d.FDB {
					if _, bad := c.reject[e.Node]; bad {
						t.Errorf("FDB entry of rejected node %s programmed: %+v", e.Node, e)
					}
				}
				for _, e := range d.Neighbors {
					if _, bad := c.reject[e.Node]; bad {
						t.Errorf("neighbour of rejected node %s programmed: %+v", e.Node, e)
					}
				}
				if d.Peers["none"] < len(c.reject) {
					t.Errorf("peers %v count fewer than %d unprogrammed", d.Peers, len(c.reject))
				}
			})
		}
	}
}

// A node that publishes another node's VTEP MAC is reported once as an
// Event and in the metric, and never programmed.
func TestControllerReportsConflictingPeer(t *testing.T) {
	victim := apiNode("victim", "10.0.2.20", "10.244.20.0/24")
	victim.CreationTimestamp = metav1.NewTime(t0)
	victim.Annotations = map[string]string{AnnotationVTEPMAC: "0e:00:00:00:00:20"}
	evil := apiNode("evil", "10.0.2.21", "10.244.21.0/24")
	evil.CreationTimestamp = metav1.NewTime(t0.Add(time.Hour))
	evil.Annotations = map[string]string{AnnotationVTEPMAC: "0e:00:00:00:00:20"}
	c, dp, rec, _, _ := newTestController(t, config.ModeVXLAN, apiNode("node1", "10.0.1.11", "10.244.1.0/24"), victim, evil)
	for i := 0; i < 2; i++ {
		if err := c.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	last := dp.applied[len(dp.applied)-1]
	if len(last.FDB) != 1 || last.FDB[0].Node != "victim" || last.FDB[0].Dst != netip.MustParseAddr("10.0.2.20") {
		t.Errorf("FDB %+v, want only victim's MAC -> 10.0.2.20", last.FDB)
	}
	var events []string
	for len(rec.Events) > 0 {
		events = append(events, <-rec.Events)
	}
	if len(events) != 1 || !strings.Contains(events[0], "Warning "+ReasonConflict) || !strings.Contains(events[0], "evil") ||
		!strings.Contains(events[0], "victim") {
		t.Errorf("events %q; want one %s warning naming evil and victim", events, ReasonConflict)
	}
	if got := testutil.ToFloat64(c.metrics.peerProblems.WithLabelValues(ReasonConflict)); got != 1 {
		t.Errorf("trellis_routing_peer_problems{reason=%q} = %v, want 1", ReasonConflict, got)
	}
}

// A route another owner holds is reported (Event, metric) and the sync
// still succeeds.
func TestControllerReportsForeignRoute(t *testing.T) {
	c, dp, rec, _, _ := newTestController(t, config.ModeAuto,
		apiNode("node1", "10.0.1.11", "10.244.1.0/24"), apiNode("node2", "10.0.1.12", "10.244.2.0/24"))
	dp.err = &ForeignRouteError{Routes: []Route{{Dst: netip.MustParsePrefix("10.244.2.0/24"), Node: "node2"}}}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("Sync with a foreign route: %v; want success (reported, not retried)", err)
	}
	if ok, _ := c.Ready(); !ok {
		t.Error("not ready although everything else was programmed")
	}
	ev := <-rec.Events
	if !strings.Contains(ev, "Warning "+ReasonForeignRoute) || !strings.Contains(ev, "10.244.2.0/24") {
		t.Errorf("event %q; want a %s warning naming 10.244.2.0/24", ev, ReasonForeignRoute)
	}
	if got := testutil.ToFloat64(c.metrics.peerProblems.WithLabelValues(ReasonForeignRoute)); got != 1 {
		t.Errorf("trellis_routing_peer_problems{reason=%q} = %v, want 1", ReasonForeignRoute, got)
	}
}
