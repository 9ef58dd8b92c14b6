package policy_test

import (
	"flag"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/policy/oracle"
)

var (
	propSeed  = flag.Int64("policy.seed", 20261129, "first seed of the random policy property test")
	propCases = flag.Int("policy.cases", 400, "number of random cases")
)

// gen builds random worlds. Everything is drawn from small vocabularies so
// that selectors, ports and blocks actually hit one another.
type gen struct{ r *rand.Rand }

func (g gen) pick(xs ...string) string { return xs[g.r.Intn(len(xs))] }

// Families of a random world: IPv4 only, IPv6 only, dual-stack (every pod
// has both), or mixed (each pod one family or both).
var worldFamilies = []string{"ipv4", "ipv6", "dual", "mixed"}

// podIPs are a pod's addresses in a world of families fam: 10.244.N.h
// and fd00:244:N::h on node nN.
func (g gen) podIPs(fam, node string, h int) string {
	n := map[string]int{"n1": 1, "n2": 2}[node]
	v4, v6 := fmt.Sprintf("10.244.%d.%d", n, h), fmt.Sprintf("fd00:244:%d::%x", n, h)
	if fam == "mixed" {
		fam = g.pick("ipv4", "ipv6", "dual")
	}
	switch fam {
	case "ipv6":
		return v6
	case "dual":
		if g.r.Intn(2) == 0 {
			return v6 + "," + v4 // IPv6 primary
		}
		return v4 + "," + v6
	}
	return v4
}

func (g gen) world() *world {
	w := newWorld()
	fam := worldFamilies[g.r.Intn(len(worldFamilies))]
	w.families = fam
	for _, ns := range []string{"x", "y", "z"} {
		w.addNamespace(ns, map[string]string{"team": g.pick("red", "blue")})
	}
	n := 4 + g.r.Intn(6)
	for i := 0; i < n; i++ {
		ns := g.pick("x", "y", "z")
		node := g.pick("n1", "n2")
		lbl := map[string]string{"pod": g.pick("a", "b", "c")}
		if g.r.Intn(2) == 0 {
			lbl["app"] = g.pick("web", "db")
		}
		var ports []corev1.ContainerPort
		if g.r.Intn(3) > 0 {
			ports = append(ports, corev1.ContainerPort{Name: "serve", ContainerPort: int32([]int{80, 81, 8080}[g.r.Intn(3)]),
				Protocol: corev1.Protocol(g.pick("TCP", "UDP", "SCTP", ""))})
		}
		if g.r.Intn(3) == 0 {
			ports = append(ports, corev1.ContainerPort{Name: "metrics", ContainerPort: 81, Protocol: corev1.ProtocolTCP})
		}
		ip := g.podIPs(fam, node, 2+i*3)
		hostNet := g.r.Intn(8) == 0
		w.addPod(ns, fmt.Sprintf("p%d", i), node, ip, hostNet, lbl, ports...)
		if !hostNet && g.r.Intn(5) == 0 {
			w.markPending(ns, fmt.Sprintf("p%d", i), g.r.Intn(3) == 0)
		}
	}
	for i, k := 0, 1+g.r.Intn(4); i < k; i++ {
		w.addPolicy(g.policy(i))
	}
	return w
}

func (g gen) selector(allowNil bool) *metav1.LabelSelector {
	switch g.r.Intn(7) {
	case 0:
		if allowNil {
			return nil
		}
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{}
	case 2, 3:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"pod": g.pick("a", "b", "c")}}
	case 4:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app",
			Operator: metav1.LabelSelectorOpIn, Values: []string{g.pick("web", "db")}}}}
	case 5:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app",
			Operator: metav1.LabelSelectorOperator(g.pick("Exists", "DoesNotExist"))}}}
	default:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod",
			Operator: metav1.LabelSelectorOpNotIn, Values: []string{g.pick("a", "b")}}}}
	}
}

func (g gen) nsSelector() *metav1.LabelSelector {
	switch g.r.Intn(4) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"team": g.pick("red", "blue")}}
	default:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": g.pick("x", "y", "z")}}
	}
}

var blocks = []networkingv1.IPBlock{
	{CIDR: "10.244.0.0/16"},
	{CIDR: "10.244.0.0/16", Except: []string{"10.244.1.0/24"}},
	{CIDR: "10.244.1.0/24", Except: []string{"10.244.1.8/29", "10.244.1.20/32"}},
	{CIDR: "0.0.0.0/0", Except: []string{"10.244.2.0/25"}},
	{CIDR: "192.168.0.0/24"},
	{CIDR: "192.168.0.2/32"},
	{CIDR: "10.244.2.5/30"},
	{CIDR: "fd00::/8"},
	{CIDR: "fd00:244:1::/64", Except: []string{"fd00:244:1::8/125", "fd00:244:1::14/128"}},
	{CIDR: "::/0", Except: []string{"fd00:244:2::/65"}},
	{CIDR: "fd00:192::/64"},
	{CIDR: "fd00:192::2/128"},
	{CIDR: "fd00:244:2::5/126"},
	{CIDR: "fd00:244::/46", Except: []string{"fd00:244:1::/48"}},
}

func (g gen) peers() []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for i, k := 0, g.r.Intn(3); i < k; i++ {
		switch g.r.Intn(4) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector(false)})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: g.nsSelector()})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector(false), NamespaceSelector: g.nsSelector()})
		default:
			b := blocks[g.r.Intn(len(blocks))]
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: &b})
		}
	}
	return out
}

func (g gen) ports() []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for i, k := 0, g.r.Intn(3); i < k; i++ {
		var p networkingv1.NetworkPolicyPort
		if g.r.Intn(4) > 0 {
			pr := corev1.Protocol(g.pick("TCP", "UDP", "SCTP"))
			p.Protocol = &pr
		}
		switch g.r.Intn(5) {
		case 0: // protocol only
		case 1:
			v := intstr.FromString(g.pick("serve", "metrics", "nope"))
			p.Port = &v
		case 2:
			v, end := intstr.FromInt32(80), int32([]int{81, 8080}[g.r.Intn(2)])
			p.Port, p.EndPort = &v, &end
		default:
			v := intstr.FromInt32(int32([]int{80, 81, 8080}[g.r.Intn(3)]))
			p.Port = &v
		}
		out = append(out, p)
	}
	return out
}

func (g gen) policy(i int) networkingv1.NetworkPolicy {
	spec := networkingv1.NetworkPolicySpec{PodSelector: *g.selector(false)}
	switch g.r.Intn(4) {
	case 0: // defaulted
	case 1:
		spec.PolicyTypes = ingressOnly
	case 2:
		spec.PolicyTypes = egressOnly
	default:
		spec.PolicyTypes = both
	}
	for j, k := 0, g.r.Intn(3); j < k; j++ {
		spec.Ingress = append(spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
	}
	for j, k := 0, g.r.Intn(3); j < k; j++ {
		spec.Egress = append(spec.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
	}
	return np(g.pick("x", "y", "z"), fmt.Sprintf("np%d", i), spec)
}

var propertyProbes = append(append([]probe(nil), defaultProbes...),
	probe{corev1.ProtocolUDP, 8080}, probe{corev1.ProtocolSCTP, 8080}, probe{corev1.ProtocolTCP, 9999})

// TestPropertyTracerMatchesOracle: for random clusters and policies, the
// verdict of the compiled ruleset equals the reference evaluator's for every
// pod pair, protocol and port.
func TestPropertyTracerMatchesOracle(t *testing.T) {
	allowed, denied := 0, 0
	for c := 0; c < *propCases; c++ {
		seed := *propSeed + int64(c)
		w := gen{rand.New(rand.NewSource(seed))}.world()
		w.program(t)
		if mm := w.mismatches(t, propertyProbes); len(mm) > 0 {
			t.Fatalf("seed %d (rerun: go test ./internal/policy -run TestPropertyTracerMatchesOracle -policy.seed=%d -policy.cases=1): %d mismatches:\n%s\npolicies:\n%s",
				seed, seed, len(mm), strings.Join(mm, "\n"), describe(w))
		}
		for i := range w.cluster.Pods {
			for j := range w.cluster.Pods {
				if i != j && w.cluster.Allowed(&w.cluster.Pods[i], &w.cluster.Pods[j], corev1.ProtocolTCP, 80) {
					allowed++
				} else if i != j {
					denied++
				}
			}
		}
	}
	// Guard against a generator that makes the property trivial.
	if *propCases >= 50 && (allowed == 0 || denied == 0 || denied*20 < allowed) {
		t.Fatalf("generator is degenerate: %d allowed, %d denied TCP/80 pairs", allowed, denied)
	}
	t.Logf("%d cases, TCP/80 pairs: %d allowed, %d denied", *propCases, allowed, denied)
}

func describe(w *world) string {
	var b strings.Builder
	for _, p := range w.cluster.Pods {
		pending, isPending := w.cluster.Pending[p.Namespace+"/"+p.Name]
		fmt.Fprintf(&b, "pod %s/%s node=%s ip=%s host=%v labels=%v ports=%v pending=%v(%+v)\n", p.Namespace, p.Name, p.Spec.NodeName,
			p.Status.PodIP, p.Spec.HostNetwork, p.Labels, p.Spec.Containers[0].Ports, isPending, pending)
	}
	for _, ns := range w.cluster.Namespaces {
		fmt.Fprintf(&b, "ns %s %v\n", ns.Name, ns.Labels)
	}
	for _, np := range w.cluster.Policies {
		fmt.Fprintf(&b, "policy %s/%s %s\n", np.Namespace, np.Name, np.Spec.String())
	}
	return b.String()
}

var _ = oracle.ProtocolICMP
