//go:build e2e

package policy

import (
	"flag"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var (
	randSeed  = flag.Int64("policy.seed", 0, "seed of TestE2EPolicyRandom (0: from the clock, printed)")
	randCases = flag.Int("policy.cases", 4, "number of random policy sets TestE2EPolicyRandom applies")
)

// randGen draws policies over the model's vocabulary so that selectors,
// ports and blocks hit the pods.
type randGen struct {
	r *rand.Rand
	m *model
}

func (g randGen) pick(xs ...string) string { return xs[g.r.Intn(len(xs))] }

func (g randGen) podSel() *metav1.LabelSelector {
	switch g.r.Intn(4) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod",
			Operator: metav1.LabelSelectorOpNotIn, Values: []string{g.pick("a", "b", "c")}}}}
	default:
		return labels("pod", g.pick("a", "b", "c"))
	}
}

func (g randGen) peers() []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for i, n := 0, g.r.Intn(3); i < n; i++ {
		switch g.r.Intn(4) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.podSel()})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: labels("ns", g.pick("x", "y", "z"))})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: labels("ns", g.pick("x", "y", "z")), PodSelector: g.podSel()})
		default:
			p := g.m.pods[g.r.Intn(len(g.m.pods))]
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16",
				Except: []string{g.m.ip[p] + "/32"}}})
		}
	}
	return out
}

func (g randGen) ports() []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for i, n := 0, g.r.Intn(3); i < n; i++ {
		proto := corev1.Protocol(g.pick("TCP", "UDP"))
		switch g.r.Intn(3) {
		case 0:
			out = append(out, port(proto, intstr.FromString(fmt.Sprintf("serve-%s-%s", g.pick("80", "81"), strings.ToLower(string(proto)))), nil))
		case 1:
			end := int32(81)
			out = append(out, port(proto, intstr.FromInt32(80), &end))
		default:
			out = append(out, port(proto, intstr.FromInt32(int32(80+g.r.Intn(2))), nil))
		}
	}
	return out
}

func (g randGen) spec() networkingv1.NetworkPolicySpec {
	s := networkingv1.NetworkPolicySpec{PodSelector: *g.podSel()}
	s.PolicyTypes = [][]networkingv1.PolicyType{ingressOnly, egressOnly, bothTypes}[g.r.Intn(3)]
	for i, n := 0, g.r.Intn(3); i < n; i++ {
		s.Ingress = append(s.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
	}
	for i, n := 0, g.r.Intn(3); i < n; i++ {
		s.Egress = append(s.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
	}
	return s
}

// TestE2EPolicyRandom is the property test run against the lab: random
// policy sets applied through the API, the whole matrix probed, observed
// equal to the oracle's expectation. The seed is printed for a rerun.
func TestE2EPolicyRandom(t *testing.T) {
	requireAgent(t)
	seed := *randSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000
	}
	t.Logf("seed %d (rerun: -policy.seed=%d -policy.cases=%d)", seed, seed, *randCases)
	m := newModel(t)
	g := randGen{r: rand.New(rand.NewSource(seed)), m: m}
	for c := 0; c < *randCases; c++ {
		t.Run(fmt.Sprintf("case-%d", c), func(t *testing.T) {
			t.Cleanup(func() { m.removeAll(t) })
			for i, n := 0, 1+g.r.Intn(3); i < n; i++ {
				m.create(t, g.pick("x", "y", "z"), fmt.Sprintf("rnd-%d", i), g.spec())
			}
			m.expect(t, converge)
		})
	}
}
