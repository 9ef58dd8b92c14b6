package config

import (
	"net/netip"
	"strings"
	"testing"
)

// IPv6 clusterCIDRs are refused under encryption without strict mode and
// under routingMode bgp, with a message naming the way out; IPv4 ones, and
// IPv6 under strict encryption or another routing mode, are not refused
// for that reason.
func TestValidateIPv6Combinations(t *testing.T) {
	off, on := false, true
	v4, v6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")
	cases := []struct {
		name   string
		mode   RoutingMode
		enc    Encryption
		strict *bool
		cidrs  []netip.Prefix
		want   string // "" : no IPv6 refusal
	}{
		{"v6 with encryption, strict off", ModeVXLAN, EncryptionWireGuard, &off, []netip.Prefix{v4, v6}, "set encryptionStrict: true"},
		{"v6 with encryption, strict by default", ModeVXLAN, EncryptionWireGuard, nil, []netip.Prefix{v4, v6}, ""},
		{"v6 with encryption, strict on", ModeAuto, EncryptionWireGuard, &on, []netip.Prefix{v6}, ""},
		{"v6 under bgp", ModeBGP, EncryptionNone, nil, []netip.Prefix{v4, v6}, "routingMode bgp advertises IPv4 pod CIDRs only"},
		{"v4 only under bgp", ModeBGP, EncryptionNone, nil, []netip.Prefix{v4}, ""},
		{"v4 only with encryption, strict off", ModeVXLAN, EncryptionWireGuard, &off, []netip.Prefix{v4}, ""},
		{"v6 native", ModeNative, EncryptionNone, nil, []netip.Prefix{v6}, ""},
	}
	for _, c := range cases {
		cfg := Default()
		cfg.NodeName, cfg.RoutingMode, cfg.Encryption, cfg.EncryptionStrict, cfg.ClusterCIDRs = "n1", c.mode, c.enc, c.strict, c.cidrs
		err := cfg.Validate()
		got := err != nil && strings.Contains(err.Error(), "is IPv6, and ")
		if (c.want != "") != got || (c.want != "" && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Validate() = %v; want IPv6 refusal %q", c.name, err, c.want)
		}
	}
}
