//go:build e2e

package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/policy/oracle"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// A node's host traffic to a pod on another node, under an ingress policy
// whose only peer is an ipBlock of the node subnets: the policy oracle,
// told the source address each path gives host traffic (node IP over a
// native route, the sending node's VTEP address over VXLAN), predicts
// every answer, in whatever routing mode the lab runs.
func TestE2EAgentHostToRemotePodIPBlock(t *testing.T) {
	requireAgent(t)
	ctx := context.Background()
	nodes := l.Nodes()
	refs := l.PodPerNode(t, "agent-hostsrc", nodes)
	ns := strings.SplitN(refs[0], "/", 2)[0]
	var blocks []networkingv1.NetworkPolicyPeer
	for _, s := range l.State.Topology.Subnets {
		blocks = append(blocks, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: s.Prefix.Masked().String()}})
	}
	tcp, port := corev1.ProtocolTCP, intstr.FromInt32(80)
	np := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "from-node-subnets"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: blocks,
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}}}}

	// The oracle's view: pods, one host-network "pod" per node, the policy,
	// and the source each path gives host traffic.
	vtep := map[string]string{}
	cl := &oracle.Cluster{Policies: []networkingv1.NetworkPolicy{np}}
	hosts := map[string]*corev1.Pod{}
	for _, n := range nodes {
		kn, err := l.CS.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cidrs := routing.PodCIDRs(kn); len(cidrs) > 0 {
			vtep[n] = cidrs[0].Masked().Addr().String()
		}
		hosts[n] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: corev1.PodSpec{NodeName: n, HostNetwork: true},
			Status: corev1.PodStatus{PodIP: l.NodeHost(t, n).Addr.String()}}
	}
	overVXLAN := func(a, b string) bool { return mode() == "vxlan" || (mode() == "auto" && !l.SameSubnet(a, b)) }
	cl.HostSource = func(src, dst *corev1.Pod) string {
		if overVXLAN(src.Spec.NodeName, dst.Spec.NodeName) {
			return vtep[src.Spec.NodeName]
		}
		return ""
	}
	pods := map[string]*corev1.Pod{}
	for _, r := range refs {
		pods[r] = getPod(t, r)
		cl.Pods = append(cl.Pods, *pods[r])
	}
	if _, err := l.CS.NetworkingV1().NetworkPolicies(ns).Create(ctx, &np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	type pair struct{ node, pod string }
	want := map[pair]bool{}
	for _, n := range nodes {
		for _, r := range refs {
			p := pods[r]
			want[pair{n, r}] = reachable(n, p.Spec.NodeName) && cl.Allowed(hosts[n], p, tcp, 80)
		}
	}
	observe := func() (map[pair]bool, []string) {
		got, diffs := map[pair]bool{}, []string(nil)
		for _, n := range nodes {
			for _, r := range refs {
				err := probe.ProbeFromNetns(framework.NetnsPath(l.NodeHost(t, n).Netns),
					probe.Target{Addr: pods[r].Status.PodIP, Port: 80, Proto: "tcp"}, time.Second)
				k := pair{n, r}
				got[k] = err == nil
				if got[k] != want[k] {
					path := "native"
					if overVXLAN(n, pods[r].Spec.NodeName) {
						path = "vxlan"
					}
					diffs = append(diffs, fmt.Sprintf("node %s -> %s (on %s, %s path): reached=%v, oracle says %v (%v)",
						n, r, pods[r].Spec.NodeName, path, got[k], want[k], err))
				}
			}
		}
		return got, diffs
	}
	// The policy is in force on every node once a pod (not in the node
	// subnets) no longer reaches each pod.
	for i, r := range refs {
		src := refs[(i+1)%len(refs)]
		eventually(t, 15*time.Second, "policy programmed for "+r, func() bool {
			return probe.ProbeFromNetns(podNetns(t, src), probe.Target{Addr: pods[r].Status.PodIP, Port: 80, Proto: "tcp"}, time.Second) != nil
		})
	}
	_, diffs := observe()
	if len(diffs) > 0 {
		t.Errorf("mode %s: host -> remote pod under an ipBlock of the node subnets disagrees with the oracle:\n%s",
			mode(), strings.Join(diffs, "\n"))
	}
	denied := 0
	for _, v := range want {
		if !v {
			denied++
		}
	}
	t.Logf("mode %s: %d host -> pod pairs, %d expected denied (unreachable or VTEP-sourced)", mode(), len(want), denied)
}
