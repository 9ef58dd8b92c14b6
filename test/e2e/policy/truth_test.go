//go:build e2e

package policy

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/lab/topology"
)

const converge = 10 * time.Second

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	bothTypes   = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	tcp, udp    = corev1.ProtocolTCP, corev1.ProtocolUDP
	sctp        = corev1.ProtocolSCTP
)

func labels(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func port(proto corev1.Protocol, p intstr.IntOrString, end *int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p, EndPort: end}
}

func from(peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyIngressRule {
	return []networkingv1.NetworkPolicyIngressRule{{From: peers}}
}

// TestE2EPolicyTruthTables runs the upstream netpol families on one set of
// pods; each case leaves no policy and no extra label behind. Cases with
// sctp set also probe SCTP 80 and 81 (lab raw-packet probe).
func TestE2EPolicyTruthTables(t *testing.T) {
	requireAgent(t)
	m := newModel(t)
	podA := *labels("pod", "a")
	end81 := int32(81)
	cases := []struct {
		name string
		run  func(t *testing.T)
		sctp bool
	}{
		{"no policies: everything reachable", func(t *testing.T) {}, true},
		{"default deny ingress", func(t *testing.T) {
			m.create(t, "x", "deny-ingress", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly})
		}, true},
		{"SCTP not admitted by a TCP rule", func(t *testing.T) {
			m.create(t, "x", "tcp-80-only", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port(tcp, intstr.FromInt32(80), nil)}}}})
		}, true},
		{"an SCTP rule admits SCTP, not TCP", func(t *testing.T) {
			m.create(t, "y", "sctp-81-from-z", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "b"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "z")}},
					Ports: []networkingv1.NetworkPolicyPort{port(sctp, intstr.FromInt32(81), nil)}}}})
		}, true},
		{"default deny egress", func(t *testing.T) {
			m.create(t, "x", "deny-egress", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly})
		}, false},
		{"default deny all", func(t *testing.T) {
			m.create(t, "y", "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes})
		}, false},
		{"allow from namespace", func(t *testing.T) {
			m.create(t, "x", "from-y", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(networkingv1.NetworkPolicyPeer{NamespaceSelector: labels("ns", "y")})})
		}, false},
		{"allow from pod", func(t *testing.T) {
			m.create(t, "x", "from-b", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(networkingv1.NetworkPolicyPeer{PodSelector: labels("pod", "b")})})
		}, false},
		{"allow from namespace and pod (matchExpressions)", func(t *testing.T) {
			m.create(t, "x", "from-ns-and-pod", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(networkingv1.NetworkPolicyPeer{
					NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "ns", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"y"}}}},
					PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{"b", "c"}}}},
				})})
		}, false},
		{"allow from namespace or pod", func(t *testing.T) {
			m.create(t, "x", "from-either", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(networkingv1.NetworkPolicyPeer{NamespaceSelector: labels("ns", "y")},
					networkingv1.NetworkPolicyPeer{PodSelector: labels("pod", "c")})})
		}, false},
		{"named port", func(t *testing.T) {
			m.create(t, "x", "named-81", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port(tcp, intstr.FromString("serve-81-tcp"), nil), port(udp, intstr.FromString("serve-80-udp"), nil)}}}})
		}, false},
		{"named port on egress", func(t *testing.T) {
			m.create(t, "z", "egress-named", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly,
				Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port(tcp, intstr.FromString("serve-80-tcp"), nil)}}}})
		}, false},
		{"endPort, and UDP not admitted by a TCP rule", func(t *testing.T) {
			m.create(t, "x", "tcp-80-81", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "y")}},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80), &end81)}}}})
		}, false},
		{"stacked policies", func(t *testing.T) {
			m.create(t, "x", "y-on-80", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "y")}},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80), nil)}}}})
			m.create(t, "x", "z-on-81", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "z")}},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(81), nil), port(udp, intstr.FromInt32(81), nil)}}}})
		}, false},
		{"allow-all overrides deny-all", func(t *testing.T) {
			m.create(t, "x", "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes})
			m.expect(t, converge)
			m.create(t, "x", "allow-all-ingress", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{}}})
			m.create(t, "x", "allow-all-egress", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly,
				Egress: []networkingv1.NetworkPolicyEgressRule{{}}})
		}, false},
		{"ipBlock with except", func(t *testing.T) {
			m.create(t, "x", "cidr", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(m.blocks(func(f topology.ClusterFamily) *networkingv1.IPBlock {
					return &networkingv1.IPBlock{CIDR: f.ClusterCIDR.String(), Except: []string{m.hostPrefix(f, "y/b"), m.hostPrefix(f, "z/c")}}
				})...)})
		}, false},
		{"egress to a namespace, and egress ipBlock", func(t *testing.T) {
			m.create(t, "x", "to-y", networkingv1.NetworkPolicySpec{PodSelector: podA, PolicyTypes: egressOnly,
				Egress: []networkingv1.NetworkPolicyEgressRule{
					{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "y")}}},
					{To: m.blocks(func(f topology.ClusterFamily) *networkingv1.IPBlock {
						return &networkingv1.IPBlock{CIDR: m.hostPrefix(f, "z/b")}
					})},
				}})
		}, false},
		{"ipBlock of every address except a node's pod CIDR", func(t *testing.T) {
			m.create(t, "x", "not-node-of-a", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "b"),
				Ingress: from(m.blocks(func(f topology.ClusterFamily) *networkingv1.IPBlock {
					return &networkingv1.IPBlock{CIDR: allAddresses(f), Except: []string{m.nodePodCIDR(t, "x/a", f)}}
				})...)})
		}, false},
		{"policy update takes effect", func(t *testing.T) {
			m.create(t, "x", "moving", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(networkingv1.NetworkPolicyPeer{NamespaceSelector: labels("ns", "y")})})
			m.expect(t, converge)
			m.update(t, "x", "moving", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(networkingv1.NetworkPolicyPeer{NamespaceSelector: labels("ns", "z")})})
		}, false},
		{"pod and namespace label updates take effect", func(t *testing.T) {
			m.create(t, "x", "by-labels", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(networkingv1.NetworkPolicyPeer{NamespaceSelector: labels("team", "blue"), PodSelector: labels("role", "client")})})
			t.Cleanup(func() {
				m.labelPod(t, "z/b", map[string]string{"role": ""})
				m.labelPod(t, "y/c", map[string]string{"role": ""})
				m.labelNamespace(t, "z", map[string]string{"team": ""})
				m.labelNamespace(t, "y", map[string]string{"team": ""})
			})
			m.labelPod(t, "z/b", map[string]string{"role": "client"})
			m.labelPod(t, "y/c", map[string]string{"role": "client"})
			m.expect(t, converge) // no namespace is blue yet
			m.labelNamespace(t, "z", map[string]string{"team": "blue"})
			m.expect(t, converge) // z/b now allowed
			m.labelNamespace(t, "y", map[string]string{"team": "blue"})
			m.expect(t, converge) // and y/c
			m.labelPod(t, "z/b", map[string]string{"role": ""})
		}, false},
		{"policy delete takes effect", func(t *testing.T) {
			m.create(t, "z", "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes})
			m.expect(t, converge)
			m.remove(t, "z", "deny-all")
		}, false},
	}
	if len(m.fams) > 1 {
		// Only in a lab with two families: a block of one family admits
		// that family's connections and not the other's.
		last := m.fams[len(m.fams)-1]
		cases = append(cases, struct {
			name string
			run  func(t *testing.T)
			sctp bool
		}{"an ipBlock of one family admits that family only", func(t *testing.T) {
			m.create(t, "x", "one-family", networkingv1.NetworkPolicySpec{PodSelector: podA,
				Ingress: from(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: last.ClusterCIDR.String(),
					Except: []string{m.hostPrefix(last, "y/c")}}})})
			m.create(t, "y", "egress-one-family", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "b"), PolicyTypes: egressOnly,
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: allAddresses(last)}}}}}})
		}, false})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { m.removeAll(t); m.probes = served })
			if tc.sctp {
				m.probes = withSCTP
			}
			tc.run(t)
			m.expect(t, converge)
		})
	}
}
