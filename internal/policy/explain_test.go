package policy_test

import (
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/oracle"
)

// endpoint is the explain input for one pod of the world, looked up in the
// snapshot the agents compile from (pending pods are not in it), with its
// address of family fam ("" for its primary address).
func (w *world) endpoint(snap *policy.Snapshot, p *corev1.Pod, fam ...oracle.Family) policy.Endpoint {
	ip := p.Status.PodIP
	if len(fam) > 0 {
		ip = oracle.PodIP(p, fam[0])
	}
	ep := policy.Endpoint{Addr: netip.MustParseAddr(ip)}
	if pp, ok := w.cluster.Pending[p.Namespace+"/"+p.Name]; ok {
		sp := policy.PodFromAPI(p, "")
		ep.Pod, ep.Pending, ep.NamespaceUnknown = &sp, true, pp.NamespaceUnknown
		return ep
	}
	for i := range snap.Pods {
		if snap.Pods[i].Namespace == p.Namespace && snap.Pods[i].Name == p.Name {
			ep.Pod = &snap.Pods[i]
		}
	}
	return ep
}

// TestPropertyExplainMatchesOracle: on every world of the policy property
// test, Explain's verdict equals the reference evaluator's for every pod
// pair, family both have, protocol and port, and its provenance is consistent with it (an
// isolated side is allowed exactly when some selecting policy names an
// admitting rule).
func TestPropertyExplainMatchesOracle(t *testing.T) {
	checked, withRule := 0, 0
	for c := 0; c < *propCases; c++ {
		seed := *propSeed + int64(c)
		w := gen{rand.New(rand.NewSource(seed))}.world()
		snap := w.snapshot("")
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
					for _, pr := range propertyProbes {
						ex := policy.Explain(snap, w.endpoint(snap, src, fam), w.endpoint(snap, dst, fam), pr.proto, uint16(pr.port))
						want := w.cluster.AllowedIn(fam, src, dst, pr.proto, pr.port)
						checked++
						if ex.Allowed != want {
							t.Fatalf("seed %d: %s/%s -> %s/%s %s %s/%d: explain=%v oracle=%v\nexplanation: %+v\n%s",
								seed, src.Namespace, src.Name, dst.Namespace, dst.Name, fam, pr.proto, pr.port, ex.Allowed, want, ex, describe(w))
						}
						for _, s := range []policy.Side{ex.Egress, ex.Ingress} {
							admitted := false
							for _, pm := range s.Policies {
								admitted = admitted || len(pm.Admitting) > 0
							}
							if admitted {
								withRule++
							}
							if s.Isolated && len(s.Policies) > 0 && admitted != s.Allowed {
								t.Fatalf("seed %d: %s/%s -> %s/%s %s/%d %s: allowed=%v but admitting rules found=%v: %+v",
									seed, src.Namespace, src.Name, dst.Namespace, dst.Name, pr.proto, pr.port, s.Direction, s.Allowed, admitted, s)
							}
						}
					}
				}
			}
		}
	}
	if *propCases >= 50 && withRule == 0 {
		t.Fatal("no case was admitted by a named rule: the provenance is never exercised")
	}
	t.Logf("%d cases agree with the oracle over %d worlds; %d sides admitted by a named rule", checked, *propCases, withRule)
}

// TestExplainNamesRules: the explanation names the selecting policies, the
// admitting rule, peer and port, and says when nothing admits.
func TestExplainNamesRules(t *testing.T) {
	w := newWorld()
	w.addNamespace("x", nil)
	w.addPod("x", "a", "n1", "10.244.1.2", false, map[string]string{"app": "web"})
	w.addPod("x", "b", "n2", "10.244.2.2", false, map[string]string{"app": "db"},
		corev1.ContainerPort{Name: "sql", ContainerPort: 5432})
	tcp := corev1.ProtocolTCP
	named := intstr.FromString("sql")
	w.addPolicy(np("x", "db-in", networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
		PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/24"}}}},
			{From: []networkingv1.NetworkPolicyPeer{
				{IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/12"}},
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &named}}},
		},
	}))
	snap := w.snapshot("")
	a, b := w.endpoint(snap, &w.cluster.Pods[0]), w.endpoint(snap, &w.cluster.Pods[1])

	ex := policy.Explain(snap, a, b, corev1.ProtocolTCP, 5432)
	if !ex.Allowed || ex.Egress.Isolated || !ex.Ingress.Isolated {
		t.Fatalf("a->b 5432/TCP: %+v", ex)
	}
	got := ex.Ingress.Policies
	if len(got) != 1 || got[0].Policy != "x/db-in" || len(got[0].Admitting) != 1 {
		t.Fatalf("ingress policies: %+v", got)
	}
	if want := "ingress rule 2, peer 2: podSelector app=web, port sql/TCP (=5432)"; got[0].Admitting[0].Text != want {
		t.Errorf("rule text %q, want %q", got[0].Admitting[0].Text, want)
	}

	ex = policy.Explain(snap, a, b, corev1.ProtocolTCP, 80)
	if ex.Allowed || ex.Ingress.Allowed || len(ex.Ingress.Policies[0].Admitting) != 0 ||
		!strings.Contains(ex.Ingress.Reason, "no rule admits TCP/80 from 10.244.1.2") {
		t.Fatalf("a->b 80/TCP: %+v", ex)
	}

	ext := policy.Endpoint{Addr: netip.MustParseAddr("192.168.0.9")}
	ex = policy.Explain(snap, ext, b, corev1.ProtocolUDP, 53)
	if !ex.Allowed || ex.Ingress.Policies[0].Admitting[0].Text != "ingress rule 1, peer 1: ipBlock 192.168.0.0/24, every port" {
		t.Fatalf("external->b: %+v", ex)
	}
	if !strings.Contains(ex.Egress.Reason, "external") {
		t.Errorf("external source's egress reason: %q", ex.Egress.Reason)
	}
}
