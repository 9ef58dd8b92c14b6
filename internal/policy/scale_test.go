package policy_test

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/policy"
)

// scaleSnapshot is the benchmark scale: 10,000 pods in 100
// namespaces on 100 nodes (100 local to n0), 1,000 policies.
func scaleSnapshot(pods, policies int) *policy.Snapshot {
	r := rand.New(rand.NewSource(1))
	s := &policy.Snapshot{NodeName: "n0"}
	for i := 0; i < 100; i++ {
		s.Namespaces = append(s.Namespaces, policy.Namespace{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"kubernetes.io/metadata.name": fmt.Sprintf("ns%d", i), "team": fmt.Sprintf("t%d", i%10)}})
	}
	for i := 0; i < pods; i++ {
		node := i % 100
		p := policy.Pod{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("p%d", i),
			Labels:   map[string]string{"app": fmt.Sprintf("app%d", r.Intn(20)), "tier": fmt.Sprintf("tier%d", r.Intn(3))},
			IPs:      []netip.Addr{netip.AddrFrom4([4]byte{10, byte(node), byte(i / 100 / 256), byte(i / 100 % 256)})},
			NodeName: fmt.Sprintf("n%d", node),
			Ports:    []policy.ContainerPort{{Name: "http", Protocol: "TCP", Port: int32(8000 + r.Intn(3))}}}
		if node == 0 {
			p.Interface = fmt.Sprintf("trl%011x", i)
		}
		s.Pods = append(s.Pods, p)
	}
	for i := 0; i < policies; i++ {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("np%d", i)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", r.Intn(20))}},
				PolicyTypes: both,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{
						{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("tier%d", r.Intn(3))}}},
						{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", r.Intn(10))}}},
					},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("http"), nil), port(udp, intstr.FromInt32(53), nil)},
				}},
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{fmt.Sprintf("10.%d.0.0/16", r.Intn(100))}}}},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(443), nil)},
				}, {
					To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", r.Intn(10))}},
						PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "tier0"}}}},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("http"), nil)},
				}},
			}}
		s.Policies = append(s.Policies, np)
	}
	return s
}

// TestScaleCompileAndApply reports (and bounds) compile and apply time at
// the scale; the full resync must stay well inside the 500 ms p99
// programming-latency budget.
func TestScaleCompileAndApply(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test skipped in -short mode")
	}
	snap := scaleSnapshot(10000, 1000)
	start := time.Now()
	d := policy.Compile(snap)
	compile := time.Since(start)
	elems := 0
	for _, s := range d.Sets {
		elems += len(s.Elements)
	}
	fake := knftables.NewFake(knftables.InetFamily, policy.TableName)
	start = time.Now()
	if _, err := policy.Apply(context.Background(), fake, d); err != nil {
		t.Fatal(err)
	}
	apply := time.Since(start)
	start = time.Now()
	st, err := policy.ApplyWith(context.Background(), fake, policy.Compile(snap), policy.ApplyOptions{Previous: d, TrustGroupSets: true})
	if err != nil {
		t.Fatal(err)
	}
	resync := time.Since(start)
	t.Logf("10k pods / 1k policies: compile %v, first apply (fake) %v, no-op resync %v (%d ops); %d chains, %d sets, %d set elements",
		compile, apply, resync, st.Operations, len(d.Chains), len(d.Sets), elems)
	if st.ElementsAdded+st.ElementsDeleted != 0 {
		t.Fatalf("no-op resync changed elements: %+v", st)
	}
	if compile > 5*time.Second {
		t.Fatalf("compile took %v", compile)
	}
}
