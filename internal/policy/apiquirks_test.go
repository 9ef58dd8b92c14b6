package policy_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// API objects the API server accepts and interprets in ways a strict reader
// misses: CIDRs with leading-zero octets (legacy objects, read as decimal
// by the API server) and named ports on native sidecars (init containers
// with restartPolicy Always, which Services resolve). The compiled table
// and the oracle must both read them as the API server does.
func TestAPIQuirks(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	onFailure := corev1.ContainerRestartPolicyOnFailure
	ipBlock := func(cidr string, except ...string) networkingv1.NetworkPolicy {
		return np("x", "cidr", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}}}}})
	}
	namedPortPolicy := np("x", "named", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
		{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("metrics"), nil)}}}})
	cases := []struct {
		name   string
		policy networkingv1.NetworkPolicy
		setup  func(w *world, t *testing.T)
		checks []check
	}{
		// y/b is 10.244.2.20: the except must keep it out.
		{"except with leading zeros", ipBlock("10.244.0.0/16", "010.244.002.000/24"), nil,
			[]check{{"y/b", "x/a", tcp, 80, false}, {"y/a", "x/a", tcp, 80, true}}},
		{"cidr with leading zeros", ipBlock("010.244.000.000/16", "10.244.2.0/24"), nil,
			[]check{{"y/a", "x/a", tcp, 80, true}, {"y/b", "x/a", tcp, 80, false}}},
		{"unreadable except admits nothing", ipBlock("10.244.0.0/16", "10.244.2.0/99"), nil,
			[]check{{"y/a", "x/a", tcp, 80, false}, {"y/b", "x/a", tcp, 80, false}}},
		{"named port on a native sidecar", namedPortPolicy, func(w *world, t *testing.T) {
			a := w.pod(t, "x/a")
			a.Spec.InitContainers = []corev1.Container{
				{Name: "setup", RestartPolicy: &onFailure, Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 7000}}},
				{Name: "proxy", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}}},
			}
		}, []check{{"y/a", "x/a", tcp, 9090, true}, {"y/a", "x/a", tcp, 7000, false}, {"y/a", "x/a", tcp, 80, false}}},
		{"regular container's named port wins over a sidecar's", namedPortPolicy, func(w *world, t *testing.T) {
			a := w.pod(t, "x/a")
			a.Spec.InitContainers = []corev1.Container{
				{Name: "proxy", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}}}}
			a.Spec.Containers[0].Ports = append(a.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "metrics", ContainerPort: 8080})
		}, []check{{"y/a", "x/a", tcp, 8080, true}}},
	}
	probes := append(append([]probe(nil), defaultProbes...), probe{tcp, 9090}, probe{tcp, 7000})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := xyzWorld()
			if tc.setup != nil {
				tc.setup(w, t)
			}
			w.addPolicy(tc.policy)
			w.program(t)
			w.runChecks(t, tc.checks, probes)
		})
	}
}
