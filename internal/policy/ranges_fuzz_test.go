package policy

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/policy/oracle"
)

// FuzzIPBlock: for any ipBlock (cidr and up to two excepts, as strings the
// API might hold) and any address of either family (4 or 16 bytes), the compiler's ranges — after the
// merge and the nft formatting round trip — admit the address exactly when
// the reference evaluator's ipBlock does.
func FuzzIPBlock(f *testing.F) {
	v4 := func(s string) []byte { a := netip.MustParseAddr(s).As4(); return a[:] }
	v6 := func(s string) []byte { a := netip.MustParseAddr(s).As16(); return a[:] }
	f.Add("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", v4("10.1.2.3"))
	f.Add("0.0.0.0/0", "192.168.0.0/16", "", v4("192.168.1.1"))
	f.Add("10.244.1.7/24", "10.244.1.0/25", "10.244.1.200/32", v4("10.244.1.200"))
	f.Add("fd00::/8", "", "", v4("0.0.0.1"))
	f.Add("fd00::/8", "fd00:1::/32", "", v6("fd00:1::5"))
	f.Add("fd00::/8", "fd00:1::/32", "fd00:2::/127", v6("fd00:2::1"))
	f.Add("::/0", "fd00::/8", "", v6("2001:db8::1"))
	f.Add("::/0", "", "", v4("10.0.0.1"))
	f.Add("0.0.0.0/0", "", "", v6("::1"))
	f.Add("fd00::1:0/112", "fd00::1:8000/113", "", v6("fd00::1:7fff"))
	f.Add("1.2.3.4/32", "1.2.3.4/32", "", v4("1.2.3.4"))
	f.Add("not-a-cidr", "", "", v4("0.0.0.5"))
	f.Fuzz(func(t *testing.T, cidr, ex1, ex2 string, ipBytes []byte) {
		addr, ok := netip.AddrFromSlice(ipBytes)
		if !ok || addr.Is4In6() {
			return // pod addresses are 4 or 16 bytes, never IPv4-mapped
		}
		b := &networkingv1.IPBlock{CIDR: cidr}
		for _, e := range []string{ex1, ex2} {
			if e != "" {
				b.Except = append(b.Except, e)
			}
		}
		if _, err := netip.ParsePrefix(cidr); err != nil {
			return // the API rejects it; no reference semantics to compare
		}
		for _, e := range b.Except {
			if _, err := netip.ParsePrefix(e); err != nil {
				return
			}
		}
		ranges := mergeRanges(ipBlockRanges(b))
		got := inRanges(ranges, addr)
		pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"}, Status: corev1.PodStatus{PodIP: addr.String()}}
		dst := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "d"}, Spec: corev1.PodSpec{NodeName: "n"}}
		cl := &oracle.Cluster{Pods: []corev1.Pod{pod, dst}, Policies: []networkingv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "np"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: b}}}}}}}}
		want := cl.Allowed(&pod, &dst, corev1.ProtocolTCP, 80)
		if got != want {
			t.Fatalf("ipBlock %+v, %s: compiler=%v oracle=%v (ranges %v)", b, addr, got, want, ranges)
		}
		// Every range renders to an element nft parses back to the same range.
		for _, r := range ranges {
			if back, ok := parseFormatted(formatRange(r)); !ok || back != r {
				t.Fatalf("range %v renders as %q, parses back as %v", r, formatRange(r), back)
			}
		}
	})
}

// parseFormatted inverts formatRange (address, prefix or lo-hi).
func parseFormatted(s string) (ipRange, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return prefixRange(p), p.Masked() == p
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			lo, err1 := netip.ParseAddr(s[:i])
			hi, err2 := netip.ParseAddr(s[i+1:])
			if err1 != nil || err2 != nil {
				return ipRange{}, false
			}
			return ipRange{lo, hi}, lo.BitLen() == hi.BitLen() && lo.Less(hi)
		}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ipRange{}, false
	}
	return ipRange{a, a}, true
}
