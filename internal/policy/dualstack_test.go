package policy_test

import (
	"net/netip"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/nfttrace"
)

// TestDualStackPodIsOneEndpoint: a local dual-stack pod is selected once
// (one verdict-map entry per direction, one group), is known by both of its
// addresses (one pod-ifaces element per family), and a peer selector that
// matches a dual-stack pod admits both of its addresses, each in the set of
// its family.
func TestDualStackPodIsOneEndpoint(t *testing.T) {
	w := newWorld()
	w.addNamespace("x", nil)
	w.addPod("x", "a", "n1", "10.244.1.10,fd00:244:1::a", false, map[string]string{"pod": "a"})
	w.addPod("x", "b", "n2", "fd00:244:2::b,10.244.2.11", false, map[string]string{"pod": "b"})
	w.addPolicy(np("x", "a", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), PolicyTypes: both,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("pod", "b")}}}},
		Egress:  []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("pod", "b")}}}}}))
	d := policy.Compile(w.snapshot("n1"))
	iface := `"` + ifaceFor(&w.cluster.Pods[0]) + `"`
	for _, m := range []string{policy.MapIngressPods, policy.MapEgressPods} {
		if n := len(d.Maps[m].Elements); n != 1 || d.Maps[m].Elements[0].Key[0] != iface {
			t.Errorf("map %s: %v, want one entry for %s", m, d.Maps[m].Elements, iface)
		}
	}
	if got := d.Sets[policy.SetPodIfaces].Elements; !slices.EqualFunc(got, [][]string{{iface, "10.244.1.10"}}, slices.Equal) {
		t.Errorf("pod-ifaces: %v", got)
	}
	if got := d.Sets[policy.SetPodIfaces6].Elements; !slices.EqualFunc(got, [][]string{{iface, "fd00:244:1::a"}}, slices.Equal) {
		t.Errorf("pod-ifaces6: %v", got)
	}
	if got := d.Sets[policy.SetPodAddrs6].Elements; len(got) != 2 {
		t.Errorf("pod-addrs6: %v, want both pods' IPv6 addresses", got)
	}
	if len(d.Groups) != 2 {
		t.Fatalf("groups: %v, want one per direction", d.Groups)
	}
	for name := range d.Groups {
		if got := d.Sets[name+"-all"].Elements; !slices.EqualFunc(got, [][]string{{"10.244.2.11"}}, slices.Equal) {
			t.Errorf("%s-all: %v, want b's IPv4 address", name, got)
		}
		if got := d.Sets[name+"-all6"].Elements; !slices.EqualFunc(got, [][]string{{"fd00:244:2::b"}}, slices.Equal) {
			t.Errorf("%s-all6: %v, want b's IPv6 address", name, got)
		}
	}
	w.program(t)
	if mm := w.mismatches(t, defaultProbes); len(mm) > 0 {
		t.Fatalf("tracer and oracle disagree: %v", mm)
	}
}

// TestICMPv6ThatIPv6NeedsIsAlwaysAccepted: a pod isolated in both
// directions with nothing admitted still exchanges neighbour discovery with
// its node and gets Packet Too Big from anywhere; other ICMPv6 (echo) is
// policed.
func TestICMPv6ThatIPv6NeedsIsAlwaysAccepted(t *testing.T) {
	w := newWorld()
	w.addNamespace("x", nil)
	w.addPod("x", "a", "n1", "fd00:244:1::a", false, map[string]string{"pod": "a"})
	w.addPolicy(np("x", "deny", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), PolicyTypes: both}))
	w.program(t)
	a := &w.cluster.Pods[0]
	iface := ifaceFor(a)
	podAddr, far := netip.MustParseAddr("fd00:244:1::a"), netip.MustParseAddr("2001:db8::1")
	for _, c := range []struct {
		what string
		pkt  nfttrace.Packet
		want nfttrace.Verdict
	}{
		{"neighbour solicitation from the pod to its node", nfttrace.Packet{Hook: "input", IIF: iface, SrcRoute: iface,
			Src: podAddr, Dst: netip.MustParseAddr("ff02::1:ff00:1"), Proto: 58, ICMPType: 135, CTState: "untracked"}, nfttrace.Accept},
		{"neighbour advertisement from the pod to its node", nfttrace.Packet{Hook: "input", IIF: iface, SrcRoute: iface,
			Src: podAddr, Dst: netip.MustParseAddr("fe80::2"), Proto: 58, ICMPType: 136, CTState: "untracked"}, nfttrace.Accept},
		{"packet too big towards the pod", nfttrace.Packet{Hook: "forward", IIF: underlayIface, OIF: iface, SrcRoute: underlayIface,
			Src: far, Dst: podAddr, Proto: 58, ICMPType: 2, CTState: "new"}, nfttrace.Accept},
		{"packet too big from the pod", nfttrace.Packet{Hook: "forward", IIF: iface, OIF: underlayIface, SrcRoute: iface,
			Src: podAddr, Dst: far, Proto: 58, ICMPType: 2, CTState: "new"}, nfttrace.Accept},
		{"echo request towards the pod", nfttrace.Packet{Hook: "forward", IIF: underlayIface, OIF: iface, SrcRoute: underlayIface,
			Src: far, Dst: podAddr, Proto: 58, ICMPType: 128, CTState: "new"}, nfttrace.Drop},
		{"neighbour solicitation from a spoofed source", nfttrace.Packet{Hook: "input", IIF: iface, SrcRoute: underlayIface,
			Src: netip.MustParseAddr("fd00:244:1::b"), Dst: netip.MustParseAddr("ff02::1:ff00:1"), Proto: 58, ICMPType: 135, CTState: "untracked"}, nfttrace.Drop},
	} {
		got, err := nfttrace.Trace(w.fakes["n1"], c.pkt)
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.what, got, c.want)
		}
	}
}
