package agent

import (
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The FORWARD accepts cover, per family, the configured clusterCIDRs of
// that family, else every Node's pod CIDRs of it.
func TestHostFWCIDRsPerFamily(t *testing.T) {
	node := func(name string, cidrs ...string) *v1.Node {
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDRs: cidrs}}
	}
	nodes := []*v1.Node{node("a", "10.244.1.0/24", "fd00:10:244:1::/64"), node("b", "10.244.2.0/24")}
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		cluster []netip.Prefix
		want    []netip.Prefix
	}{
		{"no clusterCIDRs: the Nodes'", nil, pp("10.244.1.0/24", "10.244.2.0/24", "fd00:10:244:1::/64")},
		{"IPv4 clusterCIDRs: IPv6 from the Nodes", pp("10.244.0.0/16"), pp("10.244.0.0/16", "fd00:10:244:1::/64")},
		{"both configured", pp("10.244.0.0/16", "fd00:10:244::/48"), pp("10.244.0.0/16", "fd00:10:244::/48")},
	} {
		if got := hostFWCIDRs(tc.cluster, nodes); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
