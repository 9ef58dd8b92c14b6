package nodeclaims

import (
	"net/netip"
	"testing"
)

func TestConflict(t *testing.T) {
	c := New("InternalIP")
	c.Claim("a", netip.MustParseAddr("10.0.0.1"), []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")})
	for _, tc := range []struct {
		ip         string
		cidr       string
		holder     string
		wantSubstr string
	}{
		{"10.0.0.2", "10.244.2.0/24", "", ""},
		{"10.0.0.1", "10.244.2.0/24", "a", "InternalIP 10.0.0.1"},
		{"10.244.1.7", "10.244.2.0/24", "a", "InternalIP 10.244.1.7 inside pod CIDR 10.244.1.0/24"},
		{"10.0.0.2", "10.244.0.0/16", "a", "pod CIDR 10.244.0.0/16 overlapping 10.244.1.0/24"},
		{"10.0.0.2", "10.0.0.0/24", "a", "pod CIDR 10.0.0.0/24 holding InternalIP 10.0.0.1"},
	} {
		h, what := c.Conflict(netip.MustParseAddr(tc.ip), []netip.Prefix{netip.MustParsePrefix(tc.cidr)})
		if h != tc.holder || what != tc.wantSubstr {
			t.Errorf("Conflict(%s, %s) = %q, %q; want %q, %q", tc.ip, tc.cidr, h, what, tc.holder, tc.wantSubstr)
		}
	}
}
