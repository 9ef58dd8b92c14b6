package oracle

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(ns, name, ip, node string, lbl map[string]string, host bool) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: host}, Status: corev1.PodStatus{PodIP: ip}}
}

// The corners of the specification the generator relies on, with
// hand-written answers.
func TestOracleSemantics(t *testing.T) {
	a := pod("x", "a", "10.0.1.1", "n1", map[string]string{"app": "a"}, false)
	b := pod("x", "b", "10.0.2.1", "n2", map[string]string{"app": "b"}, false)
	c := pod("y", "c", "10.0.1.2", "n1", map[string]string{"app": "b"}, false)
	h1 := pod("x", "h1", "192.168.0.1", "n1", map[string]string{"app": "b"}, true)
	h2 := pod("x", "h2", "192.168.0.2", "n2", map[string]string{"app": "b"}, true)
	nss := []corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"kubernetes.io/metadata.name": "x"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "y", Labels: map[string]string{"kubernetes.io/metadata.name": "y"}}},
	}
	tcp := corev1.ProtocolTCP
	cases := []struct {
		name     string
		pol      networkingv1.NetworkPolicySpec
		src, dst *corev1.Pod
		want     bool
	}{
		{"egress rules without policyTypes isolate egress", networkingv1.NetworkPolicySpec{
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "zzz"}}}}}}},
			&a, &c, false},
		{"no egress rules, no policyTypes: egress open", networkingv1.NetworkPolicySpec{}, &a, &c, true},
		{"podSelector-only peer stays in the policy namespace", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}}}}},
			&c, &a, false},
		{"empty namespaceSelector means all namespaces", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}},
			&c, &a, true},
		{"host-network pods are not matched by selectors", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}},
			&h2, &a, false},
		{"own node always reaches its pods", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
			&h1, &a, true},
		{"another node does not", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
			&h2, &a, false},
		{"ipBlock matches a host-network peer", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/24", Except: []string{"192.168.0.1/32"}}}}}}},
			&h2, &a, true},
		{"ipBlock except excludes a host-network peer", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/24", Except: []string{"192.168.0.1/32"}}}}}}},
			&h1, &b, false},
		{"ipBlock except", networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{"10.0.1.0/24"}}}}}}},
			&a, &b, false},
	}
	for _, tc := range cases {
		cl := &Cluster{Namespaces: nss, Pods: []corev1.Pod{a, b, c, h1, h2},
			Policies: []networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"}, Spec: tc.pol}}}
		if got := cl.Allowed(tc.src, tc.dst, tcp, 80); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Pending pods: all-or-nothing per direction, by namespace; matched as
// peers only through ipBlocks.
func TestOraclePendingSemantics(t *testing.T) {
	a := pod("x", "a", "10.0.1.1", "n1", map[string]string{"app": "a"}, false)
	p := pod("y", "p", "10.0.1.9", "n1", map[string]string{"app": "a"}, false)
	h1 := pod("y", "h1", "192.168.0.1", "n1", nil, true)
	h2 := pod("y", "h2", "192.168.0.2", "n2", nil, true)
	allIngress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	allEgress := []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	openFromAll := networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}}
	fromBlock := networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.1.8/29"}}}}}}
	cases := []struct {
		name     string
		ns       string
		pol      networkingv1.NetworkPolicySpec
		unknown  bool
		src, dst *corev1.Pod
		want     bool
	}{
		{"no policy in its namespace: pending pod receives", "x", networkingv1.NetworkPolicySpec{PolicyTypes: allIngress}, false, &a, &p, true},
		{"ingress policy in its namespace, even selecting nothing: denied", "y",
			networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"none": "x"}}, PolicyTypes: allIngress}, false, &a, &p, false},
		{"egress-only policy in its namespace: still receives", "y", networkingv1.NetworkPolicySpec{PolicyTypes: allEgress}, false, &a, &p, true},
		{"egress-only policy in its namespace: cannot send", "y", networkingv1.NetworkPolicySpec{PolicyTypes: allEgress}, false, &p, &a, false},
		{"unknown namespace: any ingress policy anywhere isolates", "x", networkingv1.NetworkPolicySpec{PolicyTypes: allIngress}, true, &a, &p, false},
		{"own node reaches a pending isolated pod", "y", networkingv1.NetworkPolicySpec{PolicyTypes: allIngress}, false, &h1, &p, true},
		{"another node does not", "y", networkingv1.NetworkPolicySpec{PolicyTypes: allIngress}, false, &h2, &p, false},
		{"selectors do not match a pending peer", "x", openFromAll, false, &p, &a, false},
		{"ipBlocks do", "x", fromBlock, false, &p, &a, true},
	}
	for _, tc := range cases {
		cl := &Cluster{Pods: []corev1.Pod{a, p, h1, h2},
			Policies: []networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: tc.ns, Name: "p"}, Spec: tc.pol}},
			Pending:  map[string]PendingPod{"y/p": {NamespaceUnknown: tc.unknown}}}
		if got := cl.Allowed(tc.src, tc.dst, corev1.ProtocolTCP, 80); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A host-network source on another node is matched by ipBlocks at the
// address its path gives it (HostSource); its own node and pods sources
// keep their IPs.
func TestOracleHostSourceByPath(t *testing.T) {
	a := pod("x", "a", "10.244.1.5", "n1", map[string]string{"app": "a"}, false)
	b := pod("x", "b", "10.244.2.5", "n2", map[string]string{"app": "b"}, false)
	h1 := pod("", "n1", "172.30.1.11", "n1", nil, true)
	h2 := pod("", "n2", "172.30.2.12", "n2", nil, true)
	fromNodes := networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "172.30.0.0/16"}}}}}}
	overlay := func(src, dst *corev1.Pod) string {
		if src.Spec.NodeName == "n2" {
			return "10.244.2.0" // n2 reaches n1 over VXLAN
		}
		return ""
	}
	cl := &Cluster{Pods: []corev1.Pod{a, b, h1, h2}, HostSource: overlay,
		Policies: []networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"}, Spec: fromNodes}}}
	for _, tc := range []struct {
		name     string
		src, dst *corev1.Pod
		want     bool
	}{
		{"over VXLAN the node's VTEP address is not in the node block", &h2, &a, false},
		{"over a native route the node IP is", &h1, &b, true},
		{"the own node always", &h1, &a, true},
		{"a pod keeps its own IP", &b, &a, false},
	} {
		if got := cl.Allowed(tc.src, tc.dst, corev1.ProtocolTCP, 80); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	cl.HostSource = nil
	if !cl.Allowed(&h2, &a, corev1.ProtocolTCP, 80) {
		t.Error("without HostSource the node IP is the source")
	}
}

// TestOracleFamilies: a connection uses the addresses of one family; a
// dual-stack pod matches an ipBlock by its address of that family only,
// and a pod without an address of the family has no such connection.
func TestOracleFamilies(t *testing.T) {
	dual := func(name, v4, v6 string) corev1.Pod {
		p := pod("x", name, v4, "n1", map[string]string{"app": name}, false)
		p.Status.PodIPs = []corev1.PodIP{{IP: v4}, {IP: v6}}
		return p
	}
	a := dual("a", "10.0.1.1", "fd00:1::1")
	b := dual("b", "10.0.1.2", "fd00:1::2")
	six := pod("x", "six", "fd00:1::6", "n1", map[string]string{"app": "six"}, false)
	block := func(cidr string, except ...string) networkingv1.NetworkPolicy {
		return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "in"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}}}}}}
	}
	tcp := corev1.ProtocolTCP
	for _, tc := range []struct {
		name string
		pol  networkingv1.NetworkPolicy
		fam  Family
		want bool
	}{
		{"IPv6 block admits over IPv6", block("fd00:1::/64"), IPv6, true},
		{"IPv6 block admits nothing over IPv4", block("fd00:1::/64"), IPv4, false},
		{"IPv6 except", block("fd00:1::/64", "fd00:1::/127"), IPv6, false},
		{"IPv4 block over IPv4", block("10.0.0.0/8"), IPv4, true},
		{"IPv4 block admits nothing over IPv6", block("10.0.0.0/8"), IPv6, false},
		{"primary address", block("10.0.0.0/8"), "", true},
	} {
		cl := &Cluster{Pods: []corev1.Pod{a, b, six}, Policies: []networkingv1.NetworkPolicy{tc.pol}}
		if got := cl.AllowedIn(tc.fam, &a, &b, tcp, 80); got != tc.want {
			t.Errorf("%s: a -> b %q = %v, want %v", tc.name, tc.fam, got, tc.want)
		}
	}
	cl := &Cluster{Pods: []corev1.Pod{a, b, six}}
	if cl.AllowedIn(IPv4, &six, &a, tcp, 80) {
		t.Error("an IPv6-only pod has an IPv4 connection")
	}
	if !cl.AllowedIn(IPv6, &six, &a, tcp, 80) || PodIP(&a, IPv6) != "fd00:1::1" || PodIP(&six, IPv4) != "" {
		t.Error("IPv6 connection or PodIP wrong")
	}
}
