package policy_test

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/policy/oracle"
)

// xyzWorld is the upstream netpol e2e model: namespaces x, y, z with pods
// a, b, c each (a and c on n1, b on n2), serving 80 and 81 on TCP, UDP and
// SCTP with upstream's port names, plus a host-network pod h on n1.
func xyzWorld() *world {
	w := newWorld()
	tcp, udp, sctp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	var ports []corev1.ContainerPort
	for _, pr := range []corev1.Protocol{tcp, udp, sctp} {
		for _, n := range []int32{80, 81} {
			ports = append(ports, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", n, strings.ToLower(string(pr))), ContainerPort: n, Protocol: pr})
		}
	}
	for ni, ns := range []string{"x", "y", "z"} {
		w.addNamespace(ns, map[string]string{"ns": ns})
		for pi, p := range []string{"a", "b", "c"} {
			node := "n1"
			if p == "b" {
				node = "n2"
			}
			ip := fmt.Sprintf("10.244.%d.%d", map[string]int{"n1": 1, "n2": 2}[node], 10+ni*10+pi)
			w.addPod(ns, p, node, ip, false, map[string]string{"pod": p}, ports...)
		}
	}
	w.addPod("x", "h", "n1", "", true, map[string]string{"pod": "h"})
	return w
}

func (w *world) pod(t *testing.T, id string) *corev1.Pod {
	ns, name, _ := strings.Cut(id, "/")
	for i := range w.cluster.Pods {
		if p := &w.cluster.Pods[i]; p.Namespace == ns && p.Name == name {
			return p
		}
	}
	t.Fatalf("no pod %s", id)
	return nil
}

type check struct {
	src, dst string
	proto    corev1.Protocol
	port     int32
	want     bool
}

func np(ns, name string, spec networkingv1.NetworkPolicySpec) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func port(proto corev1.Protocol, p intstr.IntOrString, end *int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p, EndPort: end}
}

var (
	tcp, udp, sctp = corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	ingressOnly    = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly     = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	both           = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func TestPolicyFamilies(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	cases := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		checks   []check
	}{
		{"default deny ingress", []networkingv1.NetworkPolicy{
			np("x", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly})},
			[]check{{"y/a", "x/a", tcp, 80, false}, {"x/b", "x/a", tcp, 80, false}, {"x/a", "y/a", tcp, 80, true},
				{"x/h", "x/a", tcp, 80, true} /* own node */, {"x/h", "x/b", tcp, 80, false} /* other node */}},
		{"default deny egress", []networkingv1.NetworkPolicy{
			np("x", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly})},
			[]check{{"x/a", "y/a", tcp, 80, false}, {"x/a", "x/h", udp, 81, false}, {"y/a", "x/a", tcp, 80, true}}},
		{"default deny all", []networkingv1.NetworkPolicy{
			np("x", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: both})},
			[]check{{"x/a", "x/c", tcp, 80, false}, {"y/a", "x/c", oracle.ProtocolICMP, 0, false}, {"y/a", "z/b", tcp, 80, true}}},
		{"allow from namespace", []networkingv1.NetworkPolicy{
			np("x", "from-y", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "y")}}}}})},
			[]check{{"y/b", "x/a", tcp, 80, true}, {"y/a", "x/b", oracle.ProtocolICMP, 0, true}, {"z/a", "x/a", tcp, 80, false}, {"x/b", "x/a", tcp, 80, false}}},
		{"allow from pod", []networkingv1.NetworkPolicy{
			np("x", "from-b", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("pod", "b")}}}}})},
			[]check{{"x/b", "x/a", tcp, 80, true}, {"y/b", "x/a", tcp, 80, false}, {"x/c", "x/a", tcp, 80, false}, {"x/c", "x/b", tcp, 80, true}}},
		{"allow from namespace and pod", []networkingv1.NetworkPolicy{
			np("x", "and", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "y"), PodSelector: sel("pod", "c")}}}}})},
			[]check{{"y/c", "x/b", tcp, 80, true}, {"y/b", "x/b", tcp, 80, false}, {"x/c", "x/b", tcp, 80, false}, {"z/c", "x/a", tcp, 80, false}}},
		{"allow from namespace or pod", []networkingv1.NetworkPolicy{
			np("x", "or", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "y")}, {PodSelector: sel("pod", "c")}}}}})},
			[]check{{"y/b", "x/b", tcp, 80, true}, {"x/c", "x/b", tcp, 80, true}, {"z/c", "x/b", tcp, 80, false}, {"x/a", "x/b", tcp, 80, false}}},
		{"matchExpressions", []networkingv1.NetworkPolicy{
			np("x", "expr", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "ns", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"x", "y"}}}}}}}}})},
			[]check{{"z/a", "x/a", tcp, 80, true}, {"y/a", "x/a", tcp, 80, false}, {"x/b", "x/a", tcp, 80, false}}},
		{"named port, TCP only", []networkingv1.NetworkPolicy{
			np("x", "named", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("serve-81-tcp"), nil)}}}})},
			[]check{{"y/a", "x/a", tcp, 81, true}, {"y/a", "x/a", tcp, 80, false}, {"y/a", "x/a", udp, 81, false}, {"y/a", "x/a", sctp, 81, false}}},
		{"endPort", []networkingv1.NetworkPolicy{
			np("x", "range", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{Ports: []networkingv1.NetworkPolicyPort{port(udp, intstr.FromInt32(81), i32(8080))}}}})},
			[]check{{"y/a", "x/a", udp, 81, true}, {"y/a", "x/a", udp, 8080, true}, {"y/a", "x/a", udp, 80, false}, {"y/a", "x/a", tcp, 81, false}}},
		{"stacking", []networkingv1.NetworkPolicy{
			np("x", "p80", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80), nil)}}}}),
			np("x", "p81", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(81), nil)}}}})},
			[]check{{"y/a", "x/a", tcp, 80, true}, {"y/a", "x/a", tcp, 81, true}, {"y/a", "x/a", tcp, 8080, false}}},
		{"allow-all overrides deny", []networkingv1.NetworkPolicy{
			np("x", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: both}),
			np("x", "all", networkingv1.NetworkPolicySpec{PolicyTypes: both,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{}}, Egress: []networkingv1.NetworkPolicyEgressRule{{}}})},
			[]check{{"y/a", "x/a", tcp, 80, true}, {"x/a", "y/c", sctp, 81, true}, {"x/a", "x/b", oracle.ProtocolICMP, 0, true}}},
		{"ipBlock with except", []networkingv1.NetworkPolicy{
			np("x", "cidr", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16", Except: []string{"10.244.2.0/24"}}}}}}})},
			[]check{{"y/a", "x/b", tcp, 80, true}, {"y/b", "x/a", tcp, 80, false}, {"z/c", "x/a", udp, 81, true}}},
		{"egress to namespace", []networkingv1.NetworkPolicy{
			np("x", "to-y", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly, Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "y")}},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("serve-80-tcp"), nil)}}}})},
			[]check{{"x/a", "y/b", tcp, 80, true}, {"x/a", "y/b", tcp, 81, false}, {"x/a", "z/b", tcp, 80, false}, {"x/a", "x/h", tcp, 80, false}}},
		{"egress to host network only via ipBlock", []networkingv1.NetworkPolicy{
			np("y", "to-nodes", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly, Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.1/32"}}}},
				{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("pod", "h"), NamespaceSelector: &metav1.LabelSelector{}}}}}})},
			[]check{{"y/a", "x/h", tcp, 80, true}, {"y/b", "x/h", udp, 80, true}, {"y/a", "x/a", tcp, 80, false}}},
		{"SCTP not admitted by TCP", []networkingv1.NetworkPolicy{
			np("x", "tcp80", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
				{Ports: []networkingv1.NetworkPolicyPort{{Port: ptrIOS(intstr.FromInt32(80))}}}}})},
			[]check{{"y/a", "x/a", tcp, 80, true}, {"y/a", "x/a", sctp, 80, false}, {"y/a", "x/a", udp, 80, false}, {"y/a", "x/a", oracle.ProtocolICMP, 0, false}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := xyzWorld()
			for _, p := range tc.policies {
				w.addPolicy(p)
			}
			w.program(t)
			w.runChecks(t, tc.checks, defaultProbes)
		})
	}
}

// runChecks asserts each check on both the tracer and the oracle, then that
// they agree on every pod pair and probe.
func (w *world) runChecks(t *testing.T, checks []check, probes []probe) {
	t.Helper()
	for _, c := range checks {
		src, dst := w.pod(t, c.src), w.pod(t, c.dst)
		got, err := w.traced(src, dst, c.proto, c.port)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s -> %s %s/%d: tracer=%v, want %v", c.src, c.dst, c.proto, c.port, got, c.want)
		}
		if o := w.cluster.Allowed(src, dst, c.proto, c.port); o != c.want {
			t.Errorf("%s -> %s %s/%d: oracle=%v, want %v", c.src, c.dst, c.proto, c.port, o, c.want)
		}
	}
	if mm := w.mismatches(t, probes); len(mm) > 0 {
		t.Errorf("tracer and oracle disagree on %d probes:\n%s", len(mm), strings.Join(mm, "\n"))
	}
}

func ptrIOS(v intstr.IntOrString) *intstr.IntOrString { return &v }
