// Package netpolworld holds the pieces of the lab's NetworkPolicy
// differential-test world that several e2e suites share: the server pod
// every model pod runs, and the random policy generator whose policies hit
// those pods (test/e2e/policy's TestE2EPolicyRandom, test/e2e/ctl's
// explain test).
package netpolworld

import (
	"fmt"
	"math/rand"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/lab/images"
)

// Port is one port a server pod serves.
type Port struct {
	Port  int
	Proto corev1.Protocol
}

// Served are the ports every server pod serves (agnhost sockets).
var Served = []Port{{80, corev1.ProtocolTCP}, {81, corev1.ProtocolTCP}, {80, corev1.ProtocolUDP}, {81, corev1.ProtocolUDP}}

// ServerPod runs agnhost serve-hostname on 80 and 81, TCP and UDP, one
// container each, with upstream-style named ports (serve-80-tcp, ...), and
// label pod=<name>.
func ServerPod(ns, name, node string) *corev1.Pod {
	zero := int64(0)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"pod": name}},
		Spec:       corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &zero},
	}
	for _, pr := range Served {
		flag := "--tcp"
		if pr.Proto == corev1.ProtocolUDP {
			flag = "--udp"
		}
		c := corev1.Container{
			Name:            fmt.Sprintf("cont-%d-%s", pr.Port, strings.ToLower(string(pr.Proto))),
			Image:           images.AgnhostImage,
			ImagePullPolicy: corev1.PullIfNotPresent,
			Args:            []string{"serve-hostname", flag, "--http=false", fmt.Sprintf("--port=%d", pr.Port)},
			Ports: []corev1.ContainerPort{{Name: fmt.Sprintf("serve-%d-%s", pr.Port, strings.ToLower(string(pr.Proto))),
				ContainerPort: int32(pr.Port), Protocol: pr.Proto}},
		}
		if pr.Proto == corev1.ProtocolTCP && pr.Port == 80 {
			c.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1,
				ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}}}
		}
		p.Spec.Containers = append(p.Spec.Containers, c)
	}
	return p
}

// Gen draws policies over the x/y/z × a/b/c world's vocabulary (namespaces
// labelled ns=<x|y|z>, pods labelled pod=<a|b|c>) so that selectors, ports
// and blocks hit the pods. Pods are the world's short names ("x/a"), IP
// their addresses (for ipBlock excepts).
type Gen struct {
	R    *rand.Rand
	Pods []string
	IP   map[string]string
	// Blocks, when set, are the ipBlocks' address families (one drawn per
	// block when there are several); unset: 10.244.0.0/16 except a pod's
	// IP/32.
	Blocks []Block
}

// Block is one IP family's ipBlock vocabulary: a block is CIDR (the
// family's cluster CIDR) except a pod's address (IP, as a host prefix) or,
// one in four, the whole family (0.0.0.0/0, ::/0) except the pod's
// address widened to /Wide (the size of a node's pod CIDR).
type Block struct {
	CIDR netip.Prefix
	IP   map[string]string
	Wide int
}

// ipBlock draws one block excepting pod p.
func (g Gen) ipBlock(p string) *networkingv1.IPBlock {
	if len(g.Blocks) == 0 {
		return &networkingv1.IPBlock{CIDR: "10.244.0.0/16", Except: []string{g.IP[p] + "/32"}}
	}
	b := g.Blocks[0]
	if len(g.Blocks) > 1 {
		b = g.Blocks[g.R.Intn(len(g.Blocks))]
	}
	a := netip.MustParseAddr(b.IP[p])
	host := netip.PrefixFrom(a, a.BitLen()).String()
	if g.R.Intn(4) == 0 {
		all := netip.IPv4Unspecified()
		if a.Is6() {
			all = netip.IPv6Unspecified()
		}
		return &networkingv1.IPBlock{CIDR: netip.PrefixFrom(all, 0).String(),
			Except: []string{netip.PrefixFrom(a, b.Wide).Masked().String()}}
	}
	return &networkingv1.IPBlock{CIDR: b.CIDR.String(), Except: []string{host}}
}

// Pick returns one of xs.
func (g Gen) Pick(xs ...string) string { return xs[g.R.Intn(len(xs))] }

func matchLabels(k, v string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
}

func (g Gen) podSel() *metav1.LabelSelector {
	switch g.R.Intn(4) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod",
			Operator: metav1.LabelSelectorOpNotIn, Values: []string{g.Pick("a", "b", "c")}}}}
	default:
		return matchLabels("pod", g.Pick("a", "b", "c"))
	}
}

func (g Gen) peers() []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for i, n := 0, g.R.Intn(3); i < n; i++ {
		switch g.R.Intn(4) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.podSel()})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: matchLabels("ns", g.Pick("x", "y", "z"))})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: matchLabels("ns", g.Pick("x", "y", "z")), PodSelector: g.podSel()})
		default:
			p := g.Pods[g.R.Intn(len(g.Pods))]
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: g.ipBlock(p)})
		}
	}
	return out
}

func (g Gen) ports() []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for i, n := 0, g.R.Intn(3); i < n; i++ {
		proto := corev1.Protocol(g.Pick("TCP", "UDP"))
		var p networkingv1.NetworkPolicyPort
		switch g.R.Intn(3) {
		case 0:
			v := intstr.FromString(fmt.Sprintf("serve-%s-%s", g.Pick("80", "81"), strings.ToLower(string(proto))))
			p = networkingv1.NetworkPolicyPort{Port: &v}
		case 1:
			v, end := intstr.FromInt32(80), int32(81)
			p = networkingv1.NetworkPolicyPort{Port: &v, EndPort: &end}
		default:
			v := intstr.FromInt32(int32(80 + g.R.Intn(2)))
			p = networkingv1.NetworkPolicyPort{Port: &v}
		}
		p.Protocol = &proto
		out = append(out, p)
	}
	return out
}

var policyTypes = [][]networkingv1.PolicyType{
	{networkingv1.PolicyTypeIngress},
	{networkingv1.PolicyTypeEgress},
	{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
}

// Spec draws one policy spec.
func (g Gen) Spec() networkingv1.NetworkPolicySpec {
	s := networkingv1.NetworkPolicySpec{PodSelector: *g.podSel()}
	s.PolicyTypes = policyTypes[g.R.Intn(3)]
	for i, n := 0, g.R.Intn(3); i < n; i++ {
		s.Ingress = append(s.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
	}
	for i, n := 0, g.R.Intn(3); i < n; i++ {
		s.Egress = append(s.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
	}
	return s
}
