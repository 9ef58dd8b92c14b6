package policy

import (
	"fmt"
	"net/netip"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCompilerKeepsNoChainOfOldSets: a set's delta names the set before
// it, and that set no longer names its own: a long run of pod adds keeps
// two generations of a set alive, not all of them.
func TestCompilerKeepsNoChainOfOldSets(t *testing.T) {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "in"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}}}
	snap := &Snapshot{NodeName: "n1", Policies: []*networkingv1.NetworkPolicy{np},
		Namespaces: []Namespace{{Name: "x"}},
		Pods:       []Pod{{Namespace: "x", Name: "local", NodeName: "n1", Interface: "trl0", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}}
	c := NewCompiler()
	var d *Desired
	for i := 0; i < 50; i++ {
		snap.Pods = append(snap.Pods, Pod{Namespace: "x", Name: fmt.Sprint("p", i), NodeName: "n2",
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, byte(i), 1})}})
		d = c.Compile(snap)
	}
	checked := 0
	for name, s := range d.Sets {
		if s.delta == nil {
			continue
		}
		checked++
		if s.delta.base.delta != nil {
			t.Errorf("set %s: its delta's base still names the set before it", name)
		}
	}
	if checked < 2 {
		t.Fatalf("%d sets carry a delta after 50 pod adds, want pod-addrs and the group's", checked)
	}
}
