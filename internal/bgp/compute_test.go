package bgp

import (
	"flag"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/config"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

const torPassword = "s3cret-md5-key"

var (
	node1 = Node{Name: "node1", Labels: map[string]string{"rack": "a"}, InternalIP: netip.MustParseAddr("10.0.1.11"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Created: time.Unix(100, 0)}
	node2 = Node{Name: "node2", Labels: map[string]string{"rack": "a"}, InternalIP: netip.MustParseAddr("10.0.1.12"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Created: time.Unix(200, 0)}
	node3 = Node{Name: "node3", Labels: map[string]string{"rack": "b"}, InternalIP: netip.MustParseAddr("10.0.2.13"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}, Created: time.Unix(300, 0)}
)

func withLabels(n Node, kv ...string) Node {
	l := map[string]string{}
	for k, v := range n.Labels {
		l[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	n.Labels = l
	return n
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func ptr[T any](v T) *T { return &v }

func bgpConfig(mut func(*v1alpha1.BGPConfigurationSpec)) *v1alpha1.BGPConfiguration {
	c := &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.BGPConfigurationSpec{ASN: 64512, InternalPeering: v1alpha1.PeeringNone}}
	if mut != nil {
		mut(&c.Spec)
	}
	return c
}

func peer(name string, mut func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}
	mut(&p.Spec)
	return p
}

func tor(mut func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	return peer("tor", func(s *v1alpha1.BGPPeerSpec) {
		s.PeerAddress, s.PeerASN = "10.0.1.1", 65000
		if mut != nil {
			mut(s)
		}
	})
}

func advert(name string, lbls map[string]string, mut func(*v1alpha1.BGPAdvertisementSpec)) *v1alpha1.BGPAdvertisement {
	a := &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	mut(&a.Spec)
	return a
}

func baseInput(local Node, mode config.RoutingMode) Input {
	return Input{
		Local:        local,
		Nodes:        []Node{node1, node2, node3},
		Config:       bgpConfig(nil),
		Mode:         mode,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
	}
}

var services = []Service{
	{Namespace: "default", Name: "web", Labels: map[string]string{"bgp": "yes"},
		ClusterIPs:      []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::10")},
		ExternalIPs:     []netip.Addr{netip.MustParseAddr("198.51.100.7")},
		LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("203.0.113.5")}},
	{Namespace: "default", Name: "web-alias", Labels: map[string]string{"bgp": "yes"},
		ClusterIPs:      []netip.Addr{netip.MustParseAddr("10.96.0.11")},
		LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("203.0.113.5")}},
	{Namespace: "kube-system", Name: "internal", Labels: map[string]string{"bgp": "no"},
		ClusterIPs:      []netip.Addr{netip.MustParseAddr("10.96.0.20")},
		ExternalIPs:     []netip.Addr{netip.MustParseAddr("198.51.100.8")},
		LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("203.0.113.9")}},
	{Namespace: "default", Name: "headless", Labels: map[string]string{"bgp": "yes"},
		ClusterIPs: []netip.Addr{{}}},
}

// goldenCases are the Compute scenarios with a golden file each.
func goldenCases() map[string]Input {
	cases := map[string]Input{}

	cases["off"] = Input{Local: node1, Nodes: []Node{node1, node2}, Mode: config.ModeNative}

	in := baseInput(node1, config.ModeNative)
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) {
		s.Import = &v1alpha1.ImportPolicy{
			AcceptedPrefixes: []v1alpha1.PrefixMatch{{Prefix: "198.18.100.0/24"}, {Prefix: "0.0.0.0/0"}, {Prefix: "172.16.0.0/12", MaxLength: 24}},
			MaxPrefixes:      500,
		}
	})
	in.Peers = []*v1alpha1.BGPPeer{tor(nil)}
	in.Advertisements = []*v1alpha1.BGPAdvertisement{advert("pods", nil, func(s *v1alpha1.BGPAdvertisementSpec) { s.PodCIDR = true })}
	cases["tor-native"] = in

	in = baseInput(node1, config.ModeBGP)
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) {
		s.ListenPort = 1179
		s.GracefulRestart = &v1alpha1.GracefulRestart{RestartTimeSeconds: 300}
	})
	in.Peers = []*v1alpha1.BGPPeer{tor(func(s *v1alpha1.BGPPeerSpec) {
		s.AllowOwnAS = 1
		s.Timers = &v1alpha1.Timers{HoldTimeSeconds: 9, KeepaliveSeconds: 3, ConnectRetrySeconds: 2}
	})}
	cases["bgp-mode-podcidrs"] = in

	in = baseInput(node1, config.ModeBGP)
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) { s.InternalPeering = v1alpha1.PeeringFullMesh })
	in.Peers = []*v1alpha1.BGPPeer{tor(nil)}
	cases["fullmesh-3"] = in

	rrNodes := []Node{withLabels(node1, "bgp.trellis.dev/reflector", "true"), node2, node3}
	rrConfig := bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) {
		s.InternalPeering = v1alpha1.PeeringRouteReflector
		s.RouteReflectors = &v1alpha1.RouteReflectors{NodeSelector: *sel("bgp.trellis.dev/reflector", "true"), ClusterID: "10.0.0.1"}
	})
	in = baseInput(rrNodes[0], config.ModeBGP)
	in.Nodes, in.Config = rrNodes, rrConfig
	cases["rr-reflector"] = in
	in = baseInput(node2, config.ModeBGP)
	in.Nodes, in.Config = rrNodes, rrConfig
	cases["rr-client"] = in

	// Two reflectors (node1, node3): they peer with each other as
	// non-clients; a client peers with both. An invalid cluster ID falls
	// back to the router ID.
	rr2Nodes := []Node{rrNodes[0], node2, withLabels(node3, "bgp.trellis.dev/reflector", "true")}
	rr2Config := rrConfig.DeepCopy()
	rr2Config.Spec.RouteReflectors.ClusterID = "not-an-address"
	in = baseInput(rr2Nodes[0], config.ModeNative)
	in.Nodes, in.Config = rr2Nodes, rr2Config
	cases["rr-two-reflectors"] = in
	in = baseInput(node2, config.ModeNative)
	in.Nodes, in.Config = rr2Nodes, rr2Config
	cases["rr-two-reflectors-client"] = in

	in = baseInput(node1, config.ModeNative)
	in.Services = services
	in.Peers = []*v1alpha1.BGPPeer{
		tor(func(s *v1alpha1.BGPPeerSpec) { s.AdvertisementSelector = sel("to", "tor") }),
		peer("upstream", func(s *v1alpha1.BGPPeerSpec) {
			s.PeerAddress, s.PeerASN, s.Multihop = "192.0.2.1", 65100, ptr(int32(4))
			s.Families = []v1alpha1.Family{v1alpha1.FamilyIPv6Unicast, v1alpha1.FamilyIPv4Unicast}
		}),
	}
	in.Advertisements = []*v1alpha1.BGPAdvertisement{
		advert("services", map[string]string{"to": "tor"}, func(s *v1alpha1.BGPAdvertisementSpec) {
			s.Services = &v1alpha1.ServiceAdvertisement{ServiceSelector: sel("bgp", "yes"), ClusterIP: true, ExternalIPs: true, LoadBalancerIPs: true}
			s.Communities = []string{"65000:100", "65000:1:2"}
			s.LocalPreference = ptr(int64(100))
		}),
		advert("lb-preferred", nil, func(s *v1alpha1.BGPAdvertisementSpec) {
			s.Services = &v1alpha1.ServiceAdvertisement{LoadBalancerIPs: true}
			s.Communities = []string{"65000:200", "65000:100"}
			s.LocalPreference = ptr(int64(200))
		}),
		advert("rack-b-only", map[string]string{"to": "tor"}, func(s *v1alpha1.BGPAdvertisementSpec) {
			s.NodeSelector = sel("rack", "b")
			s.PodCIDR = true
		}),
	}
	cases["services"] = in

	in = baseInput(node1, config.ModeNative)
	in.Passwords = map[string]string{"tor": torPassword}
	in.Peers = []*v1alpha1.BGPPeer{tor(func(s *v1alpha1.BGPPeerSpec) { s.PasswordSecretKey = "tor" })}
	cases["password-present"] = in

	in = baseInput(node1, config.ModeBGP)
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) { s.InternalPeering = v1alpha1.PeeringFullMesh })
	in.Passwords = map[string]string{"other": "x"}
	in.Peers = []*v1alpha1.BGPPeer{
		tor(func(s *v1alpha1.BGPPeerSpec) { s.PasswordSecretKey = "tor" }),
		// The mesh session to node3 must not open without the password
		// this BGPPeer asks for.
		peer("rack-b-secured", func(s *v1alpha1.BGPPeerSpec) {
			s.PeerNodeSelector = sel("rack", "b")
			s.PasswordSecretKey = "mesh"
		}),
	}
	cases["password-missing"] = in

	in = baseInput(withLabels(node1, v1alpha1.NodeASNLabel, "64601"), config.ModeBGP)
	in.Nodes = []Node{in.Local, withLabels(node2, v1alpha1.NodeASNLabel, "64602"), withLabels(node3, v1alpha1.NodeASNLabel, "not-a-number")}
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) { s.InternalPeering = v1alpha1.PeeringFullMesh })
	in.Peers = []*v1alpha1.BGPPeer{tor(nil)}
	cases["asn-label"] = in

	in = baseInput(withLabels(node1, v1alpha1.NodeASNLabel, "4294967295"), config.ModeNative)
	in.Peers = []*v1alpha1.BGPPeer{tor(nil)}
	cases["asn-label-invalid"] = in

	in = baseInput(node1, config.ModeNative)
	in.Peers = []*v1alpha1.BGPPeer{
		tor(func(s *v1alpha1.BGPPeerSpec) { s.BFD = &v1alpha1.BFD{Enabled: true} }),
		peer("tor2", func(s *v1alpha1.BGPPeerSpec) {
			s.PeerAddress, s.PeerASN = "10.0.1.2", 65000
			s.BFD = &v1alpha1.BFD{Enabled: true, MinRxMilliseconds: 100, MinTxMilliseconds: 150, Multiplier: 5}
			s.TTLSecurity = ptr(int32(1))
			s.Passive = true
		}),
	}
	cases["bfd-gr-warning"] = in

	in = baseInput(node1, config.ModeNative)
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) {
		s.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: ptr(false)}
	})
	in.Peers = []*v1alpha1.BGPPeer{tor(func(s *v1alpha1.BGPPeerSpec) { s.BFD = &v1alpha1.BFD{Enabled: true} })}
	cases["bfd-no-gr"] = in

	in = baseInput(node1, config.ModeBGP)
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) { s.InternalPeering = v1alpha1.PeeringFullMesh })
	in.Peers = []*v1alpha1.BGPPeer{
		tor(nil),
		peer("tor-again", func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress, s.PeerASN = "10.0.1.1", 65001 }),
		peer("tor-same", func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress, s.PeerASN = "10.0.1.1", 65000 }),
		// An explicit session to node2 with a wrong ASN: the BGPPeer wins
		// and the contradiction is reported.
		peer("to-node2", func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress, s.PeerASN = "10.0.1.12", 65999 }),
		// BFD on the mesh session to node3: merged, no conflict.
		peer("mesh-bfd", func(s *v1alpha1.BGPPeerSpec) {
			s.PeerNodeSelector = sel("rack", "b")
			s.BFD = &v1alpha1.BFD{Enabled: true}
		}),
		peer("self", func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress, s.PeerASN = "10.0.1.11", 64512 }),
		peer("other-rack", func(s *v1alpha1.BGPPeerSpec) {
			s.NodeSelector = sel("rack", "b")
			s.PeerAddress, s.PeerASN = "10.0.2.1", 65000
		}),
	}
	cases["conflicting-peers"] = in

	in = baseInput(node1, config.ModeBGP)
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) { s.InternalPeering = v1alpha1.PeeringFullMesh })
	in.Nodes = []Node{node1, node2, node3,
		{Name: "node4-noip", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.4.0/24")}},
		{Name: "node5-overlap", InternalIP: netip.MustParseAddr("10.0.1.15"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/23")}, Created: time.Unix(500, 0)},
		{Name: "node6-outside", InternalIP: netip.MustParseAddr("10.0.1.16"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1")}},
		{Name: "node7-sameip", InternalIP: netip.MustParseAddr("10.0.1.12"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.7.0/24")}, Created: time.Unix(400, 0)},
		{Name: "node8-nocidr", InternalIP: netip.MustParseAddr("10.0.1.18")},
		{Name: "node9-v6", InternalIP: netip.MustParseAddr("fd00::9"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}},
	}
	cases["invalid-nodes"] = in

	in = baseInput(Node{Name: "node0", Labels: map[string]string{}}, config.ModeBGP)
	cases["no-router-id"] = in

	in = baseInput(node1, config.ModeNative)
	in.Config = bgpConfig(func(s *v1alpha1.BGPConfigurationSpec) {
		s.InternalPeering = v1alpha1.PeeringRouteReflector
		s.Import = &v1alpha1.ImportPolicy{Enabled: ptr(false), AcceptedPrefixes: []v1alpha1.PrefixMatch{{Prefix: "not-a-prefix"}}}
	})
	in.Peers = []*v1alpha1.BGPPeer{
		peer("both", func(s *v1alpha1.BGPPeerSpec) {
			s.PeerAddress, s.PeerASN, s.PeerNodeSelector = "10.0.1.1", 65000, sel()
		}),
		peer("bad-selector", func(s *v1alpha1.BGPPeerSpec) {
			s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "rack", Operator: "Bogus"}}}
			s.PeerAddress, s.PeerASN = "10.0.1.1", 65000
		}),
		peer("no-asn", func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress = "10.0.1.3" }),
		peer("bad-address", func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress, s.PeerASN = "10.0.1.300", 65000 }),
	}
	in.Advertisements = []*v1alpha1.BGPAdvertisement{advert("bad-community", nil, func(s *v1alpha1.BGPAdvertisementSpec) {
		s.PodCIDR = true
		s.Communities = []string{"70000:1"}
	})}
	cases["invalid-objects"] = in
	return cases
}

func TestComputeGolden(t *testing.T) {
	for name, in := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			d, problems := Compute(in)
			checkGolden(t, name+".golden", render(d, problems))
		})
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

// TestComputeDeterministic: the order objects are listed in changes
// nothing.
func TestComputeDeterministic(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for name, in := range goldenCases() {
		want := render(Compute(in))
		for range 20 {
			sh := in
			sh.Nodes = shuffled(rng, in.Nodes)
			sh.Peers = shuffled(rng, in.Peers)
			sh.Advertisements = shuffled(rng, in.Advertisements)
			sh.Services = shuffled(rng, in.Services)
			if got := render(Compute(sh)); got != want {
				t.Fatalf("%s: shuffled input gives another result:\n%s", name, cmp.Diff(want, got))
			}
		}
	}
}

func shuffled[T any](rng *rand.Rand, s []T) []T {
	out := append([]T(nil), s...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestComputePassword: the password reaches the neighbour, and only it.
func TestComputePassword(t *testing.T) {
	in := goldenCases()["password-present"]
	d, problems := Compute(in)
	if len(d.Neighbors) != 1 || string(d.Neighbors[0].Password) != torPassword {
		t.Fatalf("neighbours %+v: want one with the Secret's password", d.Neighbors)
	}
	if strings.Contains(render(d, problems), torPassword) {
		t.Error("the rendered desired state holds the password")
	}

	// A key that is there but a different one is asked for: every
	// problem message is free of any password.
	in.Peers[0].Spec.PasswordSecretKey = "missing"
	d, problems = Compute(in)
	if len(d.Neighbors) != 0 {
		t.Errorf("a session without its password was opened: %+v", d.Neighbors)
	}
	if len(problems) != 1 || problems[0].Reason != ReasonPasswordMissing {
		t.Fatalf("problems %+v: want one PasswordMissing", problems)
	}
	for _, p := range problems {
		if strings.Contains(p.Message, torPassword) {
			t.Errorf("problem message holds a password: %q", p.Message)
		}
	}
}

// TestComputeRestartingNotSet: the Restart State bit is the controller's.
func TestComputeRestartingNotSet(t *testing.T) {
	for name, in := range goldenCases() {
		if d, _ := Compute(in); d.Global.GracefulRestart.Restarting {
			t.Errorf("%s: Compute set Restarting", name)
		}
	}
}
