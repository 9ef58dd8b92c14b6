//go:build kernel

package hostfw

import (
	"net/netip"
	"testing"
)

// A host whose ip6tables FORWARD policy is DROP (Docker with ip6tables):
// two IPv6 pods routed through it cannot reach each other until Sync adds
// Trellis's accepts to ip6 filter FORWARD, which ip6tables still reads;
// the IPv4 chain (policy DROP too) gets the IPv4 CIDR's accepts only;
// Remove takes all of them out and leaves the operator's own rule alone.
func TestKernelHostForwardDropIPv6(t *testing.T) {
	hostForwardDrop(t, forwardDrop{
		name:     "IPv6",
		hostAddr: "192.168.78.1/24",
		ifaces:   [2]string{"trlhf6a", "trlhf6b"},
		pods:     [2]string{"fd00:10:244:1::2", "fd00:10:244:2::2"},
		hostSetup: [][]string{
			{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
			{"ip6tables-nft", "-P", "FORWARD", "DROP"},
			{"ip6tables-nft", "-A", "FORWARD", "-s", "2001:db8::/32", "-j", "ACCEPT"}, // the operator's own
			{"iptables-nft", "-P", "FORWARD", "DROP"},
		},
		cidrs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")},
		rules: 4, // from/to in each family
		afterSync: []chainCheck{
			{"ip6tables-nft", []string{"-s fd00:10:244::/48", "-d fd00:10:244::/48", "-s 2001:db8::/32"}, []string{"incompatible", "10.244"}},
			{"iptables-nft", []string{"-s 10.244.0.0/16"}, []string{"fd00"}},
		},
		afterRemove: []chainCheck{{"ip6tables-nft", []string{"-s 2001:db8::/32"}, []string{"fd00:10:244::/48"}}},
	})
}
