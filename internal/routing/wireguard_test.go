package routing

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/wireguard"
)

func testKey(b byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = b
	}
	return k
}

var wgParams = Encryption{Enabled: true, Device: "trellis.wg", Port: 51871, Engine: config.EngineAuto}

// Cluster of the encryption golden tests: the golden cluster's nodes with
// keys (node2 on this subnet, node3 on another), node6 on this subnet
// without a key, node7 (created after node2) publishing node2's key and
// node8 publishing this node's key.
func wgCluster() (LocalNode, []Peer) {
	local, peers := goldenCluster()
	local.PublicKey = testKey(1)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range peers {
		switch peers[i].Name {
		case "node2":
			peers[i].PublicKey, peers[i].Created = testKey(2), t0
		case "node3":
			peers[i].PublicKey, peers[i].Created = testKey(3), t0
		}
	}
	peers = append(peers,
		Peer{Name: "node6", NodeIP: netip.MustParseAddr("10.0.1.16"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.6.0/24")}, Created: t0},
		Peer{Name: "node7", NodeIP: netip.MustParseAddr("10.0.1.17"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.7.0/24")},
			PublicKey: testKey(2), Created: t0.Add(time.Hour)},
		Peer{Name: "node8", NodeIP: netip.MustParseAddr("10.0.1.18"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.8.0/24")},
			PublicKey: testKey(1), Created: t0},
	)
	return local, peers
}

// goldenWG is a Desired as the golden files show it: keys as their
// base64 text (wgtypes.Key has no text marshaling of its own).
type goldenWG struct {
	*Desired
	WireGuard *struct {
		Device wireguard.Device
		Peers  []goldenWGPeer
	} `json:",omitempty"`
}

type goldenWGPeer struct {
	wireguard.Peer
	PublicKey string
}

func goldenView(d *Desired) goldenWG {
	v := goldenWG{Desired: d}
	if d.WireGuard != nil {
		v.WireGuard = &struct {
			Device wireguard.Device
			Peers  []goldenWGPeer
		}{Device: d.WireGuard.Device}
		for _, p := range d.WireGuard.Peers {
			v.WireGuard.Peers = append(v.WireGuard.Peers, goldenWGPeer{Peer: p, PublicKey: p.PublicKey.String()})
		}
	}
	return v
}

func TestComputeWireGuardGolden(t *testing.T) {
	local, peers := wgCluster()
	for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto} {
		t.Run(string(mode), func(t *testing.T) {
			p := Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 4096, Port: 4789}, Encryption: wgParams}
			checkGolden(t, "compute-"+string(mode)+"-wireguard.golden.json", goldenView(Compute(local, peers, p)))
		})
	}
}

// Properties of the WireGuard path that must hold in every mode, whatever
// the golden files say.
func TestComputeWireGuardProperties(t *testing.T) {
	local, peers := wgCluster()
	for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto} {
		t.Run(string(mode), func(t *testing.T) {
			p := Params{Mode: mode, VXLAN: config.VXLAN{Device: "vx"}, Encryption: wgParams}
			d := Compute(local, peers, p)
			if d.WireGuard == nil || d.RemoveWireGuard != "" {
				t.Fatalf("WireGuard %+v, RemoveWireGuard %q; want a device, no removal", d.WireGuard, d.RemoveWireGuard)
			}
			dev := d.WireGuard.Device
			want := wireguard.Device{Name: "trellis.wg", Port: 51871, MTU: 1440, Addr: netip.MustParsePrefix("10.244.1.0/32"), Engine: config.EngineAuto}
			if dev != want {
				t.Errorf("device %+v, want %+v", dev, want)
			}
			wantPeers := []wireguard.Peer{
				{Node: "node2", PublicKey: testKey(2), Endpoint: netip.MustParseAddrPort("10.0.1.12:51871"),
					AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
				{Node: "node3", PublicKey: testKey(3), Endpoint: netip.MustParseAddrPort("10.0.2.13:51871"),
					AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}},
			}
			if diff := cmp.Diff(wantPeers, d.WireGuard.Peers, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
				cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("peers (-want +got):\n%s", diff)
			}
			routes := map[string][]Route{}
			for _, r := range d.Routes {
				routes[r.Node] = append(routes[r.Node], r)
			}
			// node3 is on another subnet: through the tunnel even in native mode.
			for _, n := range []string{"node2", "node3"} {
				if rs := routes[n]; len(rs) != 1 || rs[0].Path != PathWireGuard || rs[0].Dev != "trellis.wg" || rs[0].Gw.IsValid() || rs[0].OnLink {
					t.Errorf("routes to %s: %+v; want one route dev trellis.wg without gateway", n, rs)
				}
			}
			// node6 has no key: the mode's route and a problem.
			if rs := routes["node6"]; len(rs) != 1 || rs[0].Path == PathWireGuard || rs[0].Path == "" {
				t.Errorf("routes to keyless node6: %+v; want the mode's route", rs)
			}
			if !hasProblem(d, "node6", ReasonNoWireGuardKey) {
				t.Errorf("no %s problem for node6: %+v", ReasonNoWireGuardKey, d.Problems)
			}
			// node7 claims node2's key, node8 this node's: rejected whole.
			for _, n := range []string{"node7", "node8"} {
				if len(routes[n]) != 0 || !hasProblem(d, n, ReasonConflict) {
					t.Errorf("%s (key already claimed): routes %+v, problems %+v; want none and a conflict", n, routes[n], d.Problems)
				}
			}
			for _, pr := range d.Problems {
				if pr.Node == "node7" && !strings.Contains(pr.Message, "node2") {
					t.Errorf("node7's conflict does not name node2, the key's holder: %q", pr.Message)
				}
				if strings.Contains(pr.Message, testKey(2).String()) {
					t.Errorf("problem message carries a whole key (the key id is enough): %q", pr.Message)
				}
			}
			if d.Peers["wireguard"] != 2 {
				t.Errorf("peers %v; want 2 through wireguard", d.Peers)
			}
			if mode == config.ModeNative && d.VXLAN != nil {
				t.Errorf("native with encryption: VXLAN device %+v", d.VXLAN)
			}
		})
	}
}

func TestComputeWireGuardOff(t *testing.T) {
	local, peers := wgCluster()
	p := Params{Mode: config.ModeAuto, VXLAN: config.VXLAN{Device: "vx"}, Encryption: Encryption{Device: "trellis.wg", Port: 51871}}
	d := Compute(local, peers, p)
	if d.WireGuard != nil || d.RemoveWireGuard != "trellis.wg" {
		t.Errorf("encryption off: WireGuard %+v, RemoveWireGuard %q; want none and removal of trellis.wg", d.WireGuard, d.RemoveWireGuard)
	}
	for _, r := range d.Routes {
		if r.Path == PathWireGuard || r.Dev == "trellis.wg" {
			t.Errorf("encryption off: route %+v through the tunnel", r)
		}
	}
	// Keys mean nothing with encryption off: a shared key is no conflict.
	if hasProblem(d, "node7", ReasonConflict) || hasProblem(d, "node8", ReasonConflict) || hasProblem(d, "node6", ReasonNoWireGuardKey) {
		t.Errorf("encryption off: key problems reported: %+v", d.Problems)
	}
	if d.Peers["wireguard"] != 0 {
		t.Errorf("peers %v; want none through wireguard", d.Peers)
	}
}

// The earlier-created node keeps a disputed key whatever the names and
// the order of the list.
func TestKeyConflictEarlierNodeWins(t *testing.T) {
	local, _ := goldenCluster()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	older := Peer{Name: "zz-old", NodeIP: netip.MustParseAddr("10.0.1.20"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.20.0/24")},
		PublicKey: testKey(9), Created: t0}
	newer := Peer{Name: "aa-new", NodeIP: netip.MustParseAddr("10.0.1.21"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.21.0/24")},
		PublicKey: testKey(9), Created: t0.Add(time.Minute)}
	for _, order := range [][]Peer{{older, newer}, {newer, older}} {
		d := Compute(local, order, Params{Mode: config.ModeNative, Encryption: wgParams})
		if len(d.WireGuard.Peers) != 1 || d.WireGuard.Peers[0].Node != "zz-old" || !hasProblem(d, "aa-new", ReasonConflict) {
			t.Errorf("peers %+v, problems %+v; want only zz-old (created first), aa-new rejected", d.WireGuard.Peers, d.Problems)
		}
	}
}

func TestPodMTUWithEncryption(t *testing.T) {
	on := Encryption{Enabled: true}
	cases := []struct {
		mode     config.RoutingMode
		enc      Encryption
		override int
		want     int
	}{
		{config.ModeNative, on, 0, 1440},
		{config.ModeVXLAN, on, 0, 1440}, // not 1500-60-50: encrypted packets take no VXLAN
		{config.ModeAuto, on, 0, 1440},
		{config.ModeAuto, on, 1300, 1300},
		{config.ModeNative, Encryption{}, 0, 1500},
	}
	for _, c := range cases {
		if got := PodMTU(Params{Mode: c.mode, MTU: c.override, Encryption: c.enc}, 1500); got != c.want {
			t.Errorf("PodMTU(%s, encryption %v, override %d) = %d, want %d", c.mode, c.enc.Enabled, c.override, got, c.want)
		}
	}
	// The device's MTU leaves the pod MTU's room: a full-size pod packet fits the tunnel.
	local, peers := wgCluster()
	for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto} {
		p := Params{Mode: mode, VXLAN: config.VXLAN{Device: "vx"}, Encryption: wgParams}
		d := Compute(local, peers, p)
		if pod := PodMTU(p, local.Underlay.MTU); d.WireGuard.Device.MTU < pod || d.WireGuard.Device.MTU+wireguard.OverheadIPv4 > local.Underlay.MTU {
			t.Errorf("%s: device MTU %d, pod MTU %d, underlay %d: a pod packet does not fit", mode, d.WireGuard.Device.MTU, pod, local.Underlay.MTU)
		}
	}
}

func TestPeerFromNodeReadsPublicKey(t *testing.T) {
	k := testKey(7)
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{wireguard.AnnotationPublicKey: k.String()}}}
	if got := PeerFromNode(n).PublicKey; got != k {
		t.Errorf("PublicKey = %s, want %s", got, k)
	}
	n.Annotations[wireguard.AnnotationPublicKey] = "not-a-key"
	if got := PeerFromNode(n).PublicKey; got != (wgtypes.Key{}) {
		t.Errorf("invalid annotation gave key %s, want none", got)
	}
}

func TestParamsFromConfig(t *testing.T) {
	c := &config.Config{RoutingMode: config.ModeVXLAN, Encryption: config.EncryptionWireGuard}
	c.ApplyDefaults()
	p := ParamsFromConfig(c)
	want := Encryption{Enabled: true, Device: config.DefaultWireGuardDevice, Port: config.DefaultWireGuardPort, Engine: config.EngineAuto}
	if p.Encryption != want || p.Mode != config.ModeVXLAN || p.VXLAN != c.VXLAN {
		t.Errorf("ParamsFromConfig = %+v, want encryption %+v and the mode and VXLAN settings", p, want)
	}
}
