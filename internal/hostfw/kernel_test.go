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
// host side ifname, a host route to it (/32, /128) on the host and a
// default route in the pod through the host side's gateway: IPv4
// 169.254.1.1 (proxy ARP), IPv6 fe80::1 (no duplicate address detection
// on either side).
func wirePod(t *testing.T, host *netnstest.Node, ifname, addr string) *netnstest.Node {
	t.Helper()
	v6 := netip.MustParseAddr(addr).Is6()
	var pod *netnstest.Node
	if v6 {
		pod = netnstest.NewNode(t, "192.0.2.99/32")
	} else {
		// The address moves from the pod's ul0 (from NewNode) to the veth to the host.
		pod = netnstest.NewNode(t, addr+"/32")
	}
	if err := pod.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"},
		PeerName: ifname, PeerNamespace: netlink.NsFd(int(host.NS.Fd()))}); err != nil {
		t.Fatal(err)
	}
	podCmds := [][]string{
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "addr", "del", addr + "/32", "dev", "ul0"},
		{"ip", "addr", "add", addr + "/32", "dev", "eth0"},
		{"ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
	}
	hostCmds := [][]string{
		{"ip", "link", "set", ifname, "up"},
		{"ip", "addr", "add", "169.254.1.1/32", "dev", ifname},
		{"ip", "route", "add", addr + "/32", "dev", ifname},
		{"sysctl", "-qw", "net.ipv4.conf." + ifname + ".proxy_arp=1"},
	}
	if v6 {
		podCmds = [][]string{
			{"sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"},
			{"ip", "link", "set", "eth0", "up"},
			{"ip", "-6", "addr", "add", addr + "/128", "dev", "eth0", "nodad"},
			{"ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"},
		}
		hostCmds = [][]string{
			{"sysctl", "-qw", "net.ipv6.conf." + ifname + ".accept_dad=0"},
			{"ip", "link", "set", ifname, "up"},
			{"ip", "-6", "addr", "add", "fe80::1/64", "dev", ifname, "nodad"},
			{"ip", "-6", "route", "add", addr + "/128", "dev", ifname},
		}
	}
	for _, c := range podCmds {
		if out, err := pod.Exec(c...); err != nil {
			t.Fatalf("pod %s: %v: %v: %s", addr, c, err, out)
		}
	}
	for _, c := range hostCmds {
		if out, err := host.Exec(c...); err != nil {
			t.Fatalf("host %s: %v: %v: %s", ifname, c, err, out)
		}
	}
	return pod
}

// reaches: one ping from from to the address to (IPv4 or IPv6) is answered.
func reaches(from *netnstest.Node, to string) bool {
	args := []string{"ping", "-c", "1", "-W", "1", to}
	if netip.MustParseAddr(to).Is6() {
		args = []string{"ping", "-6", "-c", "1", "-W", "1", to}
	}
	_, err := from.Exec(args...)
	return err == nil
}

// forwardDrop is one family's case of the FORWARD-policy-DROP scenario
// (hostForwardDrop).
type forwardDrop struct {
	name     string // "IPv4" or "IPv6"
	hostAddr string
	ifaces   [2]string // host sides of pods a and b
	pods     [2]string // addresses of pods a and b
	// hostSetup turns forwarding on and sets the FORWARD policies to DROP,
	// with an operator's own accept.
	hostSetup [][]string
	cidrs     []netip.Prefix
	rules     int // Sync adds, Remove removes
	// afterSync and afterRemove: what `-S FORWARD` of each tool must and
	// must not show then.
	afterSync, afterRemove []chainCheck
}

type chainCheck struct {
	tool        string
	has, hasNot []string
}

// check fails the test (fatal: at once) unless every `tool -S FORWARD`
// in host shows what checks say.
func check(t *testing.T, host *netnstest.Node, when string, fatal bool, checks []chainCheck) {
	t.Helper()
	fail := t.Errorf
	if fatal {
		fail = t.Fatalf
	}
	for _, c := range checks {
		out, err := host.Exec(c.tool, "-S", "FORWARD")
		ok := err == nil
		for _, s := range c.has {
			ok = ok && strings.Contains(out, s)
		}
		for _, s := range c.hasNot {
			ok = ok && !strings.Contains(out, s)
		}
		if !ok {
			fail("%s -S FORWARD %s (want %q, not %q): %v\n%s", c.tool, when, c.has, c.hasNot, err, out)
		}
	}
}

// A host whose FORWARD policy is DROP (as Docker leaves it): two pods
// routed through it cannot reach each other until Sync adds Trellis's
// accepts, which iptables still reads (Docker keeps working); a second
// Sync changes nothing; Remove takes them out again and leaves the
// operator's own rule alone.
func hostForwardDrop(t *testing.T, f forwardDrop) {
	ensureIptables(t)
	host := netnstest.NewNode(t, f.hostAddr)
	a := wirePod(t, host, f.ifaces[0], f.pods[0])
	b := wirePod(t, host, f.ifaces[1], f.pods[1])
	for _, c := range f.hostSetup {
		if out, err := host.Exec(c...); err != nil {
			t.Fatalf("host: %v: %v: %s", c, err, out)
		}
	}
	// Neighbour discovery settles, then the drop is what stops the ping.
	time.Sleep(200 * time.Millisecond)
	if reaches(a, f.pods[1]) {
		t.Fatalf("%s pods reach each other through a FORWARD policy DROP: the setup proves nothing", f.name)
	}
	sync := func() (st ChainState, added, removed int) {
		t.Helper()
		if err := host.NS.Do(func(ns.NetNS) error {
			var err error
			st, added, removed, err = Sync(context.Background(), Exec{}, f.cidrs)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return st, added, removed
	}
	if st, added, _ := sync(); !st.Exists || !st.PolicyDrop || added != f.rules {
		t.Fatalf("Sync found %+v and added %d rules, want the chain with policy drop and %d rules", st, added, f.rules)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !reaches(a, f.pods[1]) || !reaches(b, f.pods[0]) {
		if time.Now().After(deadline) {
			out, _ := host.Exec("nft", "list", "ruleset")
			t.Fatalf("%s pods still cannot reach each other after Sync:\n%s", f.name, out)
		}
	}
	check(t, host, "after Sync", true, f.afterSync)
	if _, added, removed := sync(); added+removed != 0 {
		t.Errorf("second Sync added %d and removed %d rules", added, removed)
	}
	var removed int
	if err := host.NS.Do(func(ns.NetNS) error {
		var err error
		removed, err = Remove(context.Background(), Exec{})
		return err
	}); err != nil || removed != f.rules {
		t.Fatalf("Remove: %d, %v; want %d rules removed", removed, err, f.rules)
	}
	if reaches(a, f.pods[1]) {
		t.Errorf("%s pods still reach each other after Remove", f.name)
	}
	check(t, host, "after Remove", false, f.afterRemove)
}

// IPv4 (iptables FORWARD policy DROP, as Docker leaves it).
func TestKernelHostForwardDropGetsPodAccepts(t *testing.T) {
	hostForwardDrop(t, forwardDrop{
		name:     "IPv4",
		hostAddr: "192.168.77.1/24",
		ifaces:   [2]string{"trlhfwa", "trlhfwb"},
		pods:     [2]string{"10.244.1.2", "10.244.2.2"},
		hostSetup: [][]string{
			{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
			{"iptables-nft", "-P", "FORWARD", "DROP"},
			{"iptables-nft", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT"}, // the operator's own
		},
		cidrs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		rules: 2,
		afterSync: []chainCheck{{"iptables-nft",
			[]string{"-s 10.244.0.0/16", "-d 10.244.0.0/16", "-s 192.0.2.0/24"}, []string{"incompatible"}}},
		afterRemove: []chainCheck{{"iptables-nft", []string{"-s 192.0.2.0/24"}, []string{"10.244.0.0/16"}}},
	})
}
