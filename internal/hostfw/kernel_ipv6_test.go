//go:build kernel

package hostfw

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/netnstest"
)

// wirePod6 makes a namespace at the IPv6 addr behind host: a veth pod
// side eth0, host side ifname with the gateway fe80::1, a /128 route to
// it on the host and a default route in the pod through fe80::1.
func wirePod6(t *testing.T, host *netnstest.Node, ifname, addr string) *netnstest.Node {
	t.Helper()
	pod := netnstest.NewNode(t, "192.0.2.99/32")
	if err := pod.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"},
		PeerName: ifname, PeerNamespace: netlink.NsFd(int(host.NS.Fd()))}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "-6", "addr", "add", addr + "/128", "dev", "eth0", "nodad"},
		{"ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"},
	} {
		if out, err := pod.Exec(c...); err != nil {
			t.Fatalf("pod %s: %v: %v: %s", addr, c, err, out)
		}
	}
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv6.conf." + ifname + ".accept_dad=0"},
		{"ip", "link", "set", ifname, "up"},
		{"ip", "-6", "addr", "add", "fe80::1/64", "dev", ifname, "nodad"},
		{"ip", "-6", "route", "add", addr + "/128", "dev", ifname},
	} {
		if out, err := host.Exec(c...); err != nil {
			t.Fatalf("host %s: %v: %v: %s", ifname, c, err, out)
		}
	}
	return pod
}

func reaches6(from *netnstest.Node, to string) bool {
	_, err := from.Exec("ping", "-6", "-c", "1", "-W", "1", to)
	return err == nil
}

// A host whose ip6tables FORWARD policy is DROP (Docker with ip6tables):
// two IPv6 pods routed through it cannot reach each other until Sync adds
// Trellis's accepts to ip6 filter FORWARD, which ip6tables still reads;
// the IPv4 chain (policy DROP too) gets the IPv4 CIDR's accepts only;
// Remove takes all of them out and leaves the operator's own rule alone.
func TestKernelHostForwardDropIPv6(t *testing.T) {
	ensureIptables(t)
	host := netnstest.NewNode(t, "192.168.78.1/24")
	a := wirePod6(t, host, "trlhf6a", "fd00:10:244:1::2")
	b := wirePod6(t, host, "trlhf6b", "fd00:10:244:2::2")
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		{"ip6tables-nft", "-P", "FORWARD", "DROP"},
		{"ip6tables-nft", "-A", "FORWARD", "-s", "2001:db8::/32", "-j", "ACCEPT"}, // the operator's own
		{"iptables-nft", "-P", "FORWARD", "DROP"},
	} {
		if out, err := host.Exec(c...); err != nil {
			t.Fatalf("host: %v: %v: %s", c, err, out)
		}
	}
	// Neighbour discovery settles, then the drop is what stops the ping.
	time.Sleep(200 * time.Millisecond)
	if reaches6(a, "fd00:10:244:2::2") {
		t.Fatal("IPv6 pods reach each other through a FORWARD policy DROP: the setup proves nothing")
	}
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")}
	sync := func() (added, removed int) {
		t.Helper()
		if err := host.NS.Do(func(ns.NetNS) error {
			var err error
			_, added, removed, err = Sync(context.Background(), Exec{}, cidrs)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return added, removed
	}
	if added, _ := sync(); added != 4 {
		t.Fatalf("Sync added %d rules, want 4 (from/to in each family)", added)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !reaches6(a, "fd00:10:244:2::2") || !reaches6(b, "fd00:10:244:1::2") {
		if time.Now().After(deadline) {
			out, _ := host.Exec("nft", "list", "ruleset")
			t.Fatalf("IPv6 pods still cannot reach each other after Sync:\n%s", out)
		}
	}
	out, err := host.Exec("ip6tables-nft", "-S", "FORWARD")
	if err != nil || strings.Contains(out, "incompatible") || !strings.Contains(out, "-s fd00:10:244::/48") ||
		!strings.Contains(out, "-d fd00:10:244::/48") || !strings.Contains(out, "-s 2001:db8::/32") || strings.Contains(out, "10.244") {
		t.Fatalf("ip6tables -S FORWARD after Sync: %v\n%s", err, out)
	}
	if out, err := host.Exec("iptables-nft", "-S", "FORWARD"); err != nil || !strings.Contains(out, "-s 10.244.0.0/16") || strings.Contains(out, "fd00") {
		t.Fatalf("iptables -S FORWARD after Sync: %v\n%s", err, out)
	}
	if added, removed := sync(); added+removed != 0 {
		t.Errorf("second Sync added %d and removed %d rules", added, removed)
	}
	var removed int
	if err := host.NS.Do(func(ns.NetNS) error {
		var err error
		removed, err = Remove(context.Background(), Exec{})
		return err
	}); err != nil || removed != 4 {
		t.Fatalf("Remove: %d, %v; want 4 rules removed", removed, err)
	}
	if reaches6(a, "fd00:10:244:2::2") {
		t.Error("IPv6 pods still reach each other after Remove")
	}
	if out, _ := host.Exec("ip6tables-nft", "-S", "FORWARD"); strings.Contains(out, "fd00:10:244::/48") || !strings.Contains(out, "-s 2001:db8::/32") {
		t.Errorf("after Remove, ip6 FORWARD:\n%s", out)
	}
}
