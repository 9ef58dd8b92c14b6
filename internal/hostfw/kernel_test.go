//go:build kernel

package hostfw

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/netnstest"
)

// ensureIptables installs Debian's iptables (iptables-nft) when missing,
// or fails loudly.
func ensureIptables(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("iptables-nft"); err == nil {
		return
	}
	out, err := exec.Command("sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables || "+
		"(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables)").CombinedOutput()
	if err != nil {
		t.Fatalf("FAIL: this test needs iptables-nft (Debian package iptables; hack/install-deps.sh installs it): %v: %s", err, out)
	}
}

// wirePod makes a namespace at addr behind host: a veth pod side eth0,
// host side ifname, a /32 route to it on the host and a default route
// in the pod through the host side's link-local address.
func wirePod(t *testing.T, host *netnstest.Node, ifname, addr string) *netnstest.Node {
	t.Helper()
	pod := netnstest.NewNode(t, addr+"/32")
	// Replace the pod's ul0 (from NewNode) by a veth to the host.
	if err := pod.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"},
		PeerName: ifname, PeerNamespace: netlink.NsFd(int(host.NS.Fd()))}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "addr", "del", addr + "/32", "dev", "ul0"},
		{"ip", "addr", "add", addr + "/32", "dev", "eth0"},
		{"ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
	} {
		if out, err := pod.Exec(c...); err != nil {
			t.Fatalf("pod %s: %v: %v: %s", addr, c, err, out)
		}
	}
	for _, c := range [][]string{
		{"ip", "link", "set", ifname, "up"},
		{"ip", "addr", "add", "169.254.1.1/32", "dev", ifname},
		{"ip", "route", "add", addr + "/32", "dev", ifname},
		{"sysctl", "-qw", "net.ipv4.conf." + ifname + ".proxy_arp=1"},
	} {
		if out, err := host.Exec(c...); err != nil {
			t.Fatalf("host %s: %v: %v: %s", ifname, c, err, out)
		}
	}
	return pod
}

func reaches(from *netnstest.Node, to string) bool {
	_, err := from.Exec("ping", "-c", "1", "-W", "1", to)
	return err == nil
}

// A host whose iptables FORWARD policy is DROP (as Docker leaves it): two
// pods routed through it cannot reach each other until Sync adds Trellis's
// accepts, which iptables still reads; Remove takes them out again and
// leaves the operator's own rule alone.
func TestKernelHostForwardDropGetsPodAccepts(t *testing.T) {
	ensureIptables(t)
	host := netnstest.NewNode(t, "192.168.77.1/24")
	a := wirePod(t, host, "trlhfwa", "10.244.1.2")
	b := wirePod(t, host, "trlhfwb", "10.244.2.2")
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"iptables-nft", "-P", "FORWARD", "DROP"},
		{"iptables-nft", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT"}, // the operator's own
	} {
		if out, err := host.Exec(c...); err != nil {
			t.Fatalf("host: %v: %v: %s", c, err, out)
		}
	}
	if reaches(a, "10.244.2.2") {
		t.Fatal("pods reach each other through a FORWARD policy DROP: the setup proves nothing")
	}
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	var st ChainState
	var added int
	err := host.NS.Do(func(ns.NetNS) error {
		var err error
		st, added, _, err = Sync(context.Background(), Exec{}, cidrs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exists || !st.PolicyDrop || added != 2 {
		t.Fatalf("Sync found %+v and added %d rules, want the chain with policy drop and 2 rules", st, added)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !reaches(a, "10.244.2.2") || !reaches(b, "10.244.1.2") {
		if time.Now().After(deadline) {
			out, _ := host.Exec("nft", "list", "ruleset")
			t.Fatalf("pods still cannot reach each other after Sync:\n%s", out)
		}
	}
	// iptables reads the chain as its own (Docker keeps working).
	out, err := host.Exec("iptables-nft", "-S", "FORWARD")
	if err != nil || strings.Contains(out, "incompatible") || !strings.Contains(out, "-s 10.244.0.0/16") ||
		!strings.Contains(out, "-d 10.244.0.0/16") || !strings.Contains(out, "-s 192.0.2.0/24") {
		t.Fatalf("iptables -S FORWARD after Sync: %v\n%s", err, out)
	}
	// A second sync changes nothing.
	err = host.NS.Do(func(ns.NetNS) error {
		_, n, m, err := Sync(context.Background(), Exec{}, cidrs)
		if err == nil && n+m != 0 {
			t.Errorf("second Sync added %d and removed %d rules", n, m)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var removed int
	err = host.NS.Do(func(ns.NetNS) error {
		var err error
		removed, err = Remove(context.Background(), Exec{})
		return err
	})
	if err != nil || removed != 2 {
		t.Fatalf("Remove: %d, %v; want 2 rules removed", removed, err)
	}
	if reaches(a, "10.244.2.2") {
		t.Error("pods still reach each other after Remove")
	}
	if out, _ := host.Exec("iptables-nft", "-S", "FORWARD"); strings.Contains(out, "10.244.0.0/16") || !strings.Contains(out, "-s 192.0.2.0/24") {
		t.Errorf("after Remove, FORWARD:\n%s", out)
	}
}
