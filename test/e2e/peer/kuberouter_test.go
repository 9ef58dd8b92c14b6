//go:build e2e && peer

// Package peer checks the lab with kube-router as its CNI (`trellis-lab up
// --cni kube-router`, the peer of `make compare`): pods come up and reach
// each other on one node, across nodes of one subnet and across subnets,
// and kube-router enforces a NetworkPolicy. It brings its own lab up
// (TRELLIS_LAB_CNI=kube-router) and is not part of `make test`, since a lab
// costs minutes; run it with `make test-peer`.
package peer

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/kuberouter"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

func TestMain(m *testing.M) {
	if os.Getenv("TRELLIS_LAB_CNI") != "kube-router" {
		os.Stderr.WriteString("test/e2e/peer needs TRELLIS_LAB_CNI=kube-router (make test-peer sets it)\n")
		os.Exit(1)
	}
	framework.Main(m, &l, 10*time.Minute)
}

func TestE2EKubeRouterPodsReachEachOther(t *testing.T) {
	if l.State.Install.Mode != kuberouter.DaemonSetName || l.HasAgent() {
		t.Fatalf("the lab is not a kube-router lab (install %+v)", l.State.Install)
	}
	ctx := context.Background()
	ds, err := l.CS.AppsV1().DaemonSets(kuberouter.Namespace).Get(ctx, kuberouter.DaemonSetName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Status.NumberReady != int32(len(l.Nodes())) {
		t.Fatalf("kube-router ready on %d of %d nodes", ds.Status.NumberReady, len(l.Nodes()))
	}
	nodes := l.Nodes()
	ns := l.Namespace(t, "e2e-peer", nil)
	specs := []framework.PodSpec{{Name: "a", Node: nodes[0]}, {Name: "b", Node: nodes[0]}}
	for i, n := range nodes[1:] {
		specs = append(specs, framework.PodSpec{Name: fmt.Sprintf("c%d", i+1), Node: n})
	}
	pods := l.CreatePods(t, ns, specs, 90*time.Second)
	sameSubnet, crossSubnet := false, false
	for _, p := range pods[2:] {
		if l.SameSubnet(nodes[0], l.NodeOf(t, p)) {
			sameSubnet = true
		} else {
			crossSubnet = true
		}
		pod := l.Pod(t, p)
		kn, err := l.CS.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !inCIDRs(pod.Status.PodIP, kn.Spec.PodCIDRs) {
			t.Errorf("pod %s has %s, outside its node's pod CIDRs %v: kube-router's CNI configuration did not allocate it", p, pod.Status.PodIP, kn.Spec.PodCIDRs)
		}
	}
	if !sameSubnet || !crossSubnet {
		t.Fatalf("the pods must span nodes of the same and of another subnet (same %v, cross %v)", sameSubnet, crossSubnet)
	}
	expected := connectivity.NewMatrix(pods, true)
	l.ExpectMatrix(t, pods, 80, "tcp", expected)
	l.ExpectMatrix(t, pods, 81, "udp", expected)

	// kube-router's firewall: isolating a's ingress blocks every other pod
	// from it and changes nothing else.
	_, err = l.CS.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-a"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if p != pods[0] {
			expected.Set(p, pods[0], false)
		}
	}
	l.ExpectMatrix(t, pods, 80, "tcp", expected)
}

func inCIDRs(ip string, cidrs []string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}
