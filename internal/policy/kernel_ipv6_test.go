//go:build kernel

package policy_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/oracle"
)

// TestKernelIPv6PoliciesAndAntiSpoofing programs a real node namespace
// with IPv6-only and dual-stack pods wired as the plugin wires them
// (/128 host routes, fe80::1 gateway, no DAD) and checks, in both
// families: real TCP connections against the tracer and the oracle (an
// ipBlock with except isolating an IPv6 pod, a pod selector admitting a
// dual-stack peer by both addresses); neighbour discovery working for a
// pod whose egress is denied entirely (the node resolves it, and every
// connection to it needs that); and IPv6 anti-spoofing: a pod's own
// address passes, an address no pod has and another pod's address are
// dropped, towards a pod and towards the node.
func TestKernelIPv6PoliciesAndAntiSpoofing(t *testing.T) {
	w := singleNodeWorld(t)
	w.addNamespace("x", map[string]string{"ns": "x"})
	w.addPod("x", "a", "n1", "10.244.1.10,fd00:244:1::a", false, map[string]string{"pod": "a"})
	w.addPod("x", "b", "n1", "fd00:244:1::b", false, map[string]string{"pod": "b"})
	w.addPod("x", "c", "n1", "fd00:244:1::c,10.244.1.12", false, map[string]string{"pod": "c"})
	w.addPod("x", "d", "n1", "fd00:244:1::d", false, map[string]string{"pod": "d"})
	// x/a: ingress from fd00:244:1::/112 except ::c/127 (so b, not c or d),
	// and from x/c on 81 (both of c's addresses). x/d: no egress at all.
	w.addPolicy(np("x", "a-in", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{
		{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "fd00:244:1::/112", Except: []string{"fd00:244:1::c/127"}}}}},
		{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("pod", "c")}}, Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(81), nil)}},
	}}))
	w.addPolicy(np("x", "d-out", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "d"), PolicyTypes: egressOnly}))

	k := newKernelNode(t)
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		var ips []netip.Addr
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, netip.MustParseAddr(ip.IP))
		}
		k.addPod(p.Namespace+"/"+p.Name, ifaceFor(p), ips...)
		for _, port := range []int{80, 81} {
			k.serve(p.Namespace+"/"+p.Name, port)
		}
	}
	// The agent finds both addresses of a dual-stack pod on its interface.
	if err := k.node.Do(func(ns.NetNS) error {
		list, err := policy.Lister{}.PodInterfaces()
		if err != nil {
			return err
		}
		got := map[string]int{}
		for _, i := range list {
			got[i.Name] = len(i.Addrs)
		}
		for i := range w.cluster.Pods {
			p := &w.cluster.Pods[i]
			if got[ifaceFor(p)] != len(p.Status.PodIPs) {
				return fmt.Errorf("pod interface of %s has %d addresses, want %d", p.Name, got[ifaceFor(p)], len(p.Status.PodIPs))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w.program(t)
	k.apply(w)

	var mismatches []string
	allowed, total := 0, 0
	for i := range w.cluster.Pods {
		for j := range w.cluster.Pods {
			if i == j {
				continue
			}
			src, dst := &w.cluster.Pods[i], &w.cluster.Pods[j]
			for _, fam := range []oracle.Family{oracle.IPv4, oracle.IPv6} {
				if oracle.PodIP(src, fam) == "" || oracle.PodIP(dst, fam) == "" {
					continue
				}
				for _, port := range []int{80, 81} {
					real := k.connect(src.Namespace+"/"+src.Name, netip.Addr{}, netip.MustParseAddr(oracle.PodIP(dst, fam)), port)
					traced, err := w.tracedIn(fam, src, dst, corev1.ProtocolTCP, int32(port))
					if err != nil {
						t.Fatal(err)
					}
					want := w.cluster.AllowedIn(fam, src, dst, corev1.ProtocolTCP, int32(port))
					if real != traced || real != want {
						mismatches = append(mismatches, fmt.Sprintf("%s -> %s %s tcp/%d: kernel=%v tracer=%v oracle=%v",
							src.Name, dst.Name, fam, port, real, traced, want))
					}
					total++
					if real {
						allowed++
					}
				}
			}
		}
	}
	if len(mismatches) > 0 {
		t.Fatalf("kernel, tracer and oracle disagree:\n%s", strings.Join(mismatches, "\n"))
	}
	// The cases the scenario is built for, spelled out.
	a6, a4, d6 := netip.MustParseAddr("fd00:244:1::a"), netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("fd00:244:1::d")
	for _, c := range []struct {
		what string
		src  string
		dst  netip.Addr
		port int
		want bool
	}{
		{"b -> a over IPv6 (inside the ipBlock)", "x/b", a6, 80, true},
		{"c -> a over IPv6 on 80 (in the except)", "x/c", a6, 80, false},
		{"c -> a over IPv6 on 81 (pod selector, IPv6 address)", "x/c", a6, 81, true},
		{"c -> a over IPv4 on 81 (pod selector, IPv4 address)", "x/c", a4, 81, true},
		{"c -> a over IPv4 on 80 (an IPv6 block admits no IPv4)", "x/c", a4, 80, false},
		{"b -> d (d's egress denied: the node still resolves d by ND)", "x/b", d6, 80, true},
	} {
		if got := k.connect(c.src, netip.Addr{}, c.dst, c.port); got != c.want {
			t.Errorf("%s: connected=%v, want %v", c.what, got, c.want)
		}
	}
	if allowed == 0 || allowed == total {
		t.Fatalf("degenerate scenario: %d of %d connections allowed", allowed, total)
	}

	// IPv6 anti-spoofing, with policies and without (enforcement off).
	b6, c6, node6 := netip.MustParseAddr("fd00:244:1::b"), netip.MustParseAddr("fd00:244:1::c"), netip.MustParseAddr("fd00:192::1")
	spoofs := []netip.Addr{netip.MustParseAddr("fd00:244:1::99"), d6}
	for _, s := range spoofs {
		k.addAddr("x/b", s)
	}
	for _, mode := range []string{"enforcing", "anti-spoofing only"} {
		if mode != "enforcing" {
			nft := mustNFT(t, k.node)
			if err := k.node.Do(func(ns.NetNS) error {
				_, err := policy.ApplyWith(context.Background(), nft, policy.AntiSpoofOnly(0), policy.ApplyOptions{Rewrite: true})
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		if !k.udpArrives("x/b", b6, k.pods["x/c"], c6) || !k.udpArrives("x/b", b6, k.node, node6) {
			t.Fatalf("%s: UDP from x/b's own IPv6 address did not arrive (pod, node)", mode)
		}
		for _, s := range spoofs {
			if k.udpArrives("x/b", s, k.pods["x/c"], c6) {
				t.Errorf("%s: UDP x/b -> x/c from spoofed IPv6 source %s arrived", mode, s)
			}
			if k.udpArrives("x/b", s, k.node, node6) {
				t.Errorf("%s: UDP x/b -> node from spoofed IPv6 source %s arrived", mode, s)
			}
		}
	}
}
