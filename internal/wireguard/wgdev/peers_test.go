package wgdev

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/wireguard"
)

func testKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func nets(ps ...string) []net.IPNet {
	out := make([]net.IPNet, len(ps))
	for i, p := range ps {
		out[i] = ipNet(netip.MustParsePrefix(p))
	}
	return out
}

func prefixes(ps ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// applyPlan plays cfgs on a model of a device the way both engines apply
// them (in order; an allowed IP belongs to one peer, adding it moves it),
// and records whether any step replaced a list.
func applyPlan(t *testing.T, cur []wgtypes.Peer, cfgs []wgtypes.PeerConfig) (map[wgtypes.Key][]string, bool) {
	t.Helper()
	owner := map[netip.Prefix]wgtypes.Key{}
	peers := map[wgtypes.Key]bool{}
	for _, p := range cur {
		peers[p.PublicKey] = true
		for pfx := range prefixSet(p.AllowedIPs) {
			owner[pfx] = p.PublicKey
		}
	}
	replaced := false
	for _, c := range cfgs {
		if c.Remove {
			delete(peers, c.PublicKey)
			for pfx, k := range owner {
				if k == c.PublicKey {
					delete(owner, pfx)
				}
			}
			continue
		}
		if c.UpdateOnly && !peers[c.PublicKey] {
			continue
		}
		if c.ReplaceAllowedIPs {
			replaced = true
		}
		peers[c.PublicKey] = true
		for pfx := range prefixSet(c.AllowedIPs) {
			owner[pfx] = c.PublicKey
		}
	}
	out := map[wgtypes.Key][]string{}
	for k := range peers {
		out[k] = nil
	}
	for pfx, k := range owner {
		out[k] = append(out[k], pfx.String())
	}
	return out, replaced
}

func TestPlanPeersPerPrefix(t *testing.T) {
	own, a, b, c, tomb := testKey(t), testKey(t), testKey(t), testKey(t), testKey(t)
	epA := netip.MustParseAddrPort("192.168.1.2:51871")
	cur := []wgtypes.Peer{
		{PublicKey: a, Endpoint: net.UDPAddrFromAddrPort(epA), AllowedIPs: nets("10.244.1.0/24", "10.244.9.0/24")},
		{PublicKey: b, AllowedIPs: nets("10.244.2.0/24")},
	}
	desired := []wireguard.Peer{
		// a: keeps 10.244.1.0/24, gains 10.244.3.0/24, loses 10.244.9.0/24.
		{Node: "a", PublicKey: a, Endpoint: epA, AllowedIPs: prefixes("10.244.3.0/24", "10.244.1.0/24")},
		// c: new, takes over b's prefix; b goes.
		{Node: "c", PublicKey: c, Endpoint: netip.MustParseAddrPort("192.168.1.4:51871"), AllowedIPs: prefixes("10.244.2.0/24")},
	}
	cfgs, err := planPeers(own, cur, desired, tomb)
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range cfgs {
		if cfg.ReplaceAllowedIPs {
			t.Errorf("peer %v: whole allowed-IP list replaced", cfg.PublicKey)
		}
		if cfg.PublicKey == a {
			if len(cfg.AllowedIPs) != 1 || cfg.AllowedIPs[0].String() != "10.244.3.0/24" {
				t.Errorf("peer a gets allowed IPs %v, want only the new 10.244.3.0/24", cfg.AllowedIPs)
			}
			if !cfg.UpdateOnly || cfg.Endpoint != nil {
				t.Errorf("peer a: UpdateOnly %v endpoint %v; want an update without an endpoint change", cfg.UpdateOnly, cfg.Endpoint)
			}
		}
	}
	// Additions come before any removal.
	seenRemove := false
	for _, cfg := range cfgs {
		isRemoval := cfg.Remove || cfg.PublicKey == tomb
		if seenRemove && !isRemoval {
			t.Errorf("addition for %v after a removal", cfg.PublicKey)
		}
		seenRemove = seenRemove || isRemoval
	}
	got, replaced := applyPlan(t, cur, cfgs)
	if replaced {
		t.Error("plan replaces a list")
	}
	want := map[wgtypes.Key]string{a: "10.244.1.0/24 10.244.3.0/24", c: "10.244.2.0/24"}
	if len(got) != len(want) {
		t.Errorf("device ends with %d peers, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		if g := sortedJoin(got[k]); g != w {
			t.Errorf("peer %s holds %q, want %q", k.String()[:8], g, w)
		}
	}
	if _, ok := got[tomb]; ok {
		t.Error("tombstone peer left on the device")
	}

	// Applied again on the result: nothing to do.
	var now []wgtypes.Peer
	for k, ps := range got {
		p := wgtypes.Peer{PublicKey: k, AllowedIPs: nets(ps...)}
		for _, d := range desired {
			if d.PublicKey == k {
				p.Endpoint = net.UDPAddrFromAddrPort(d.Endpoint)
			}
		}
		now = append(now, p)
	}
	again, err := planPeers(own, now, desired, tomb)
	if err != nil || len(again) != 0 {
		t.Errorf("second plan = %v, %v; want nothing", again, err)
	}
}

func TestPlanPeersEndpointChangeAndNewKeyTakesPrefixes(t *testing.T) {
	own, old, rotated, tomb := testKey(t), testKey(t), testKey(t), testKey(t)
	cur := []wgtypes.Peer{{PublicKey: old, Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.168.1.2:51871")),
		AllowedIPs: nets("10.244.1.0/24")}}
	// The node rotated its key: the same prefixes under the new key.
	desired := []wireguard.Peer{{Node: "a", PublicKey: rotated, Endpoint: netip.MustParseAddrPort("192.168.1.2:51871"),
		AllowedIPs: prefixes("10.244.1.0/24")}}
	cfgs, err := planPeers(own, cur, desired, tomb)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 || cfgs[0].PublicKey != rotated || !cfgs[1].Remove || cfgs[1].PublicKey != old {
		t.Fatalf("plan = %+v; want: add the new key with the prefix, then remove the old key", cfgs)
	}
	for _, c := range cfgs {
		if c.PublicKey == tomb {
			t.Error("a moved prefix went through the tombstone")
		}
	}

	// Endpoint change only.
	desired[0].PublicKey = old
	desired[0].Endpoint = netip.MustParseAddrPort("192.168.1.9:51871")
	cfgs, err = planPeers(own, cur, desired, tomb)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 1 || cfgs[0].Endpoint == nil || cfgs[0].Endpoint.String() != "192.168.1.9:51871" || len(cfgs[0].AllowedIPs) != 0 {
		t.Fatalf("plan = %+v; want one endpoint update", cfgs)
	}
}

func TestPlanPeersRejectsInconsistentPeers(t *testing.T) {
	own, a, b := testKey(t), testKey(t), testKey(t)
	for _, tc := range []struct {
		name string
		peer []wireguard.Peer
		want string
	}{
		{"no key", []wireguard.Peer{{Node: "x"}}, "no public key"},
		{"own key", []wireguard.Peer{{Node: "x", PublicKey: own}}, "own public key"},
		{"same key", []wireguard.Peer{{Node: "x", PublicKey: a}, {Node: "y", PublicKey: a}}, "same public key"},
		{"same prefix", []wireguard.Peer{
			{Node: "x", PublicKey: a, AllowedIPs: prefixes("10.244.1.0/24")},
			{Node: "y", PublicKey: b, AllowedIPs: prefixes("10.244.1.0/24")}}, "both claim 10.244.1.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := planPeers(own, nil, tc.peer, testKey(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func sortedJoin(ss []string) string {
	ps := prefixes(ss...)
	slices.SortFunc(ps, comparePrefix)
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, " ")
}

func TestOffloadsString(t *testing.T) {
	if got := (Offloads{}).String(); got != "none" {
		t.Errorf("no offloads: %q", got)
	}
	if got := (Offloads{TUNVnetHdr: true, UDPGRO: true}).String(); got != "tun-vnet-hdr,udp-gro" {
		t.Errorf("String = %q", got)
	}
}
