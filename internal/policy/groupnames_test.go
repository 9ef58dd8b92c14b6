package policy_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
)

// TestPolicyCreatedOrDeletedKeepsGroupNames: a server selected by a policy
// admitting 2,000 pods gets a second policy, which is then deleted. Its
// group's dependencies change both times, but the Compiler keeps the
// group's name (the group its pod was in), so each change writes only the
// difference: a few elements, not the 2,000-address set again. A fresh
// Compile names the group by its dependencies, and after a fresh Compile
// (a restarted agent) the names are those again.
func TestPolicyCreatedOrDeletedKeepsGroupNames(t *testing.T) {
	w := newWorld()
	w.addNamespace("x", nil)
	w.addPod("x", "server", "n1", "10.244.1.2", false, map[string]string{"role": "server"})
	w.addPod("x", "client", "n2", "10.244.2.2", false, map[string]string{"role": "client"})
	for i := range 2000 {
		w.addPod("x", fmt.Sprintf("peer%d", i), "n2", fmt.Sprintf("10.245.%d.%d", i/100, 2*(i%100)+1), false, map[string]string{"role": "peer"})
	}
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	np := func(name, from string) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "server"}},
				PolicyTypes: ingress, Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": from}}}}}}}}
	}
	big, toggle := np("big", "peer"), np("toggle", "client")
	snap := func(nps ...*networkingv1.NetworkPolicy) *policy.Snapshot {
		var pods []*corev1.Pod
		var ifaces []podlink.Interface
		for i := range w.cluster.Pods {
			p := &w.cluster.Pods[i]
			pods = append(pods, p)
			if p.Spec.NodeName == "n1" {
				ifaces = append(ifaces, ifaceOf(p))
			}
		}
		var nss []*corev1.Namespace
		for i := range w.cluster.Namespaces {
			nss = append(nss, &w.cluster.Namespaces[i])
		}
		return policy.SnapshotFromAPI("n1", pods, nss, nps, ifaces)
	}
	groupOf := func(d *policy.Desired) string {
		for _, e := range d.Maps[policy.MapIngressPods].Elements {
			return e.Value
		}
		t.Fatal("the server is in no ingress group")
		return ""
	}
	kernel := knftables.NewFake(knftables.InetFamily, policy.TableName)
	comp := policy.NewCompiler()
	var prev *policy.Desired
	apply := func(d *policy.Desired) int {
		t.Helper()
		st, err := policy.ApplyWith(context.Background(), kernel, d, policy.ApplyOptions{Previous: prev, TrustGroupSets: true})
		if err != nil {
			t.Fatal(err)
		}
		prev = d
		return st.Operations
	}
	first := comp.Compile(snap(big))
	if ops := apply(first); ops < 2000 {
		t.Fatalf("first programming: %d operations, want the 2,000 addresses at least", ops)
	}
	name := groupOf(first)
	skeleton := apply(comp.Compile(snap(big))) // no change: the table's skeleton only
	for _, step := range []struct {
		what string
		nps  []*networkingv1.NetworkPolicy
	}{{"policy created", []*networkingv1.NetworkPolicy{big, toggle}}, {"policy deleted", []*networkingv1.NetworkPolicy{big}}} {
		d := comp.Compile(snap(step.nps...))
		if got := groupOf(d); got != name {
			t.Errorf("%s: the server's group is %s, was %s", step.what, got, name)
		}
		if ops := apply(d); ops > skeleton+4 {
			t.Errorf("%s: %d operations, want at most %d (what every transaction writes) + 4 (the client's address):\n%s",
				step.what, ops, skeleton, kernel.LastTransaction)
		}
		if have, want := sortedDump(kernel), tableOf(t, policy.Compile(snap(step.nps...))); policy.CanonicalGroupNames(have) != policy.CanonicalGroupNames(want) {
			t.Errorf("%s: the table differs from a fresh build's (up to group names):\n%s\n---\n%s", step.what, have, want)
		}
	}
	// The policy created again: a fresh Compile names the group by what it
	// depends on, which differs from the name kept.
	if fresh := groupOf(policy.Compile(snap(big, toggle))); fresh == name {
		t.Errorf("a fresh compile named the group %s as well: the test shows nothing", fresh)
	}
}
