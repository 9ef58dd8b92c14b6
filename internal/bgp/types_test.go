package bgp

import (
	"net/netip"
	"testing"
)

func TestPrefixMatchContains(t *testing.T) {
	pm := func(p string, le int) PrefixMatch { return PrefixMatch{Prefix: netip.MustParsePrefix(p), MaxLen: le} }
	for _, tc := range []struct {
		m    PrefixMatch
		p    string
		want bool
	}{
		{pm("198.18.0.0/16", 0), "198.18.0.0/16", true},
		{pm("198.18.0.0/16", 0), "198.18.1.0/24", false}, // MaxLen 0: the prefix alone
		{pm("198.18.0.0/16", 24), "198.18.1.0/24", true},
		{pm("198.18.0.0/16", 24), "198.18.1.0/25", false},
		{pm("198.18.0.0/16", 24), "198.0.0.0/8", false}, // shorter: not a subnet
		{pm("198.18.0.0/16", 24), "198.19.0.0/24", false},
		{pm("198.18.0.0/16", 32), "198.18.7.7/32", true},
		{pm("198.18.5.0/16", 24), "198.18.1.0/24", true}, // unmasked match prefix
		{pm("0.0.0.0/0", 0), "0.0.0.0/0", true},
		{pm("0.0.0.0/0", 0), "10.0.0.0/8", false},
		{pm("0.0.0.0/0", 32), "10.0.0.0/8", true},
		{pm("0.0.0.0/0", 32), "2001:db8::/32", false}, // families never mix
		{pm("2001:db8::/32", 64), "2001:db8:1::/48", true},
		{pm("2001:db8::/32", 64), "2001:db8:1::/96", false},
		{pm("2001:db8::/32", 64), "10.0.0.0/8", false},
		{pm("::/0", 128), "::ffff:10.0.0.0/104", true},
		{PrefixMatch{}, "10.0.0.0/8", false}, // the zero match matches nothing
		{PrefixMatch{MaxLen: 32}, "0.0.0.0/0", false},
	} {
		if got := tc.m.Contains(netip.MustParsePrefix(tc.p)); got != tc.want {
			t.Errorf("%v le %d contains %s = %t, want %t", tc.m.Prefix, tc.m.MaxLen, tc.p, got, tc.want)
		}
	}
	if (PrefixMatch{Prefix: netip.MustParsePrefix("0.0.0.0/0"), MaxLen: 32}).Contains(netip.Prefix{}) {
		t.Error("an invalid prefix was matched")
	}
}

func TestImportPolicyAllows(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	bgpMode := ImportPolicy{
		Reject:   pfx("10.244.1.0/24"),
		PodCIDRs: pfx("10.244.2.0/24", "10.244.3.0/24"),
		Cluster:  pfx("10.244.0.0/16", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"),
	}
	native := bgpMode
	native.PodCIDRs = nil
	listed := native
	listed.Accept = []PrefixMatch{
		{Prefix: netip.MustParsePrefix("198.18.100.0/24"), MaxLen: 24},
		{Prefix: netip.MustParsePrefix("0.0.0.0/0")},
		{Prefix: netip.MustParsePrefix("172.16.0.0/12"), MaxLen: 24},
	}
	nothing := native
	nothing.Accept = []PrefixMatch{{}}
	for _, tc := range []struct {
		name string
		ip   ImportPolicy
		p    string
		want bool
	}{
		{"own pod CIDR", bgpMode, "10.244.1.0/24", false},
		{"inside own pod CIDR", bgpMode, "10.244.1.128/25", false},
		{"own pod CIDR, host bits set", bgpMode, "10.244.1.7/24", false},
		{"other node's pod CIDR, bgp mode", bgpMode, "10.244.2.0/24", true},
		{"other node's pod CIDR, host bits set", bgpMode, "10.244.2.9/24", true},
		{"subnet of another node's pod CIDR", bgpMode, "10.244.2.0/25", false},
		{"pod CIDR not allocated", bgpMode, "10.244.9.0/24", false},
		{"other node's pod CIDR, native mode", native, "10.244.2.0/24", false},
		{"cluster CIDR itself", native, "10.244.0.0/16", false},
		{"pod address as /32", native, "10.244.3.4/32", false},
		{"aggregate covering the cluster", native, "10.0.0.0/8", true},
		{"fabric prefix, empty accept", native, "198.18.100.0/24", true},
		{"default route, empty accept", native, "0.0.0.0/0", false},
		{"default route v6, empty accept", native, "::/0", false},
		{"v6 prefix, empty accept", native, "2001:db8::/32", true},
		{"mapped v4 in v6", native, "::ffff:10.244.1.0/120", false},
		{"listed default route", listed, "0.0.0.0/0", true},
		{"listed prefix", listed, "198.18.100.0/24", true},
		{"listed le 24", listed, "172.20.0.0/16", true},
		{"longer than le", listed, "172.20.0.0/25", false},
		{"not listed", listed, "203.0.113.0/24", false},
		{"listed but a pod address", listed, "10.244.2.0/24", false},
		{"nothing matches", nothing, "198.18.100.0/24", false},
	} {
		got, reason := tc.ip.Allows(netip.MustParsePrefix(tc.p))
		if got != tc.want || reason == "" {
			t.Errorf("%s: Allows(%s) = %t (%q), want %t with a reason", tc.name, tc.p, got, reason, tc.want)
		}
	}
	if ok, _ := native.Allows(netip.Prefix{}); ok {
		t.Error("an invalid prefix was allowed")
	}
}
