package policy_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/nfttrace"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

type staticIfaces struct {
	mu sync.Mutex
	m  map[netip.Addr]string
}

func (s *staticIfaces) PodInterfaces() ([]podlink.Interface, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []podlink.Interface
	for k, v := range s.m {
		out = append(out, podlink.Interface{Name: v, Addrs: []netip.Addr{k}})
	}
	return out, nil
}

// factoryInformers takes the controller's informers from a client-go
// factory (the agent builds them from internal/kubeclient instead).
func factoryInformers(f informers.SharedInformerFactory) policy.Informers {
	return policy.Informers{Pods: f.Core().V1().Pods().Informer(), Namespaces: f.Core().V1().Namespaces().Informer(),
		NetworkPolicies: f.Networking().V1().NetworkPolicies().Informer()}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestControllerFollowsTheAPI: policy create, pod label change and policy
// delete reach the table through informers and the sync runner, and the
// programming latency histogram records them.
func TestControllerFollowsTheAPI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewSimpleClientset()
	nft := knftables.NewFake(knftables.InetFamily, policy.TableName)
	reg := prometheus.NewRegistry()
	ifaces := &staticIfaces{m: map[netip.Addr]string{netip.MustParseAddr("10.244.1.10"): "trl00000000aaa"}}
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := policy.New(policy.Config{
		NodeName: "n1", Informers: factoryInformers(factory), NFT: nft, Interfaces: ifaces, Registerer: reg,
		Sync:            syncrunner.Options{MinInterval: 10 * time.Millisecond, MaxInterval: time.Hour},
		CounterCacheFor: time.Nanosecond, // every scrape reads the kernel
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	factory.WaitForCacheSync(ctx.Done())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()

	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x",
		Labels: map[string]string{"kubernetes.io/metadata.name": "x"}}}, metav1.CreateOptions{})
	mustCreate(err)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{"app": "web"}},
		Spec:   corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.10", PodIPs: []corev1.PodIP{{IP: "10.244.1.10"}}}}
	_, err = client.CoreV1().Pods("x").Create(ctx, pod, metav1.CreateOptions{})
	mustCreate(err)

	mapHas := func(m string) func() bool {
		return func() bool {
			nft.RLock()
			defer nft.RUnlock()
			return nft.Table != nil && nft.Table.Maps[m] != nil && len(nft.Table.Maps[m].Elements) == 1
		}
	}
	ifaceKnown := func() bool {
		nft.RLock()
		defer nft.RUnlock()
		return nft.Table != nil && len(nft.Table.Sets[policy.SetPodIfaces].Elements) == 1
	}
	waitFor(t, "pod programmed in pod-ifaces", ifaceKnown)

	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny-web"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	_, err = client.NetworkingV1().NetworkPolicies("x").Create(ctx, deny, metav1.CreateOptions{})
	mustCreate(err)
	waitFor(t, "pod isolated for ingress", mapHas(policy.MapIngressPods))
	probe := nfttrace.Packet{Hook: "forward", IIF: "eth0", OIF: "trl00000000aaa", Src: netip.MustParseAddr("10.244.2.7"),
		Dst: netip.MustParseAddr("10.244.1.10"), Proto: 6, DPort: 80, CTState: "new"}
	if v, err := nfttrace.Trace(nft, probe); err != nil || v != nfttrace.Drop {
		t.Fatalf("after deny policy: %v %v", v, err)
	}
	if got := gaugeValue(t, reg, "trellis_policy_selected_local_pods"); got != 1 {
		t.Fatalf("selected pods gauge = %v, want 1", got)
	}
	waitFor(t, "counts of the sync that isolated the pod", func() bool {
		got := c.Counts()
		return got.Policies == 1 && got.IsolatedIngress == 1 && got.IsolatedEgress == 0 && got.GroupsIngress == 1
	})

	pod.Labels = map[string]string{"app": "db"}
	_, err = client.CoreV1().Pods("x").Update(ctx, pod, metav1.UpdateOptions{})
	mustCreate(err)
	waitFor(t, "label change un-isolates the pod", func() bool { return !mapHas(policy.MapIngressPods)() })
	if v, err := nfttrace.Trace(nft, probe); err != nil || v != nfttrace.Accept {
		t.Fatalf("after label change: %v %v", v, err)
	}

	pod.Labels = map[string]string{"app": "web"}
	_, err = client.CoreV1().Pods("x").Update(ctx, pod, metav1.UpdateOptions{})
	mustCreate(err)
	waitFor(t, "pod isolated again", mapHas(policy.MapIngressPods))

	// Per-policy packet counters: the kernel's group counters, attributed to
	// the policy; counts made just before the group is deleted are kept.
	setDenyCounter := func(v uint64) {
		nft.Lock()
		defer nft.Unlock()
		n := 0
		for name, c := range nft.Table.Counters {
			if strings.HasPrefix(name, "ing-") && strings.HasSuffix(name, "-deny") {
				c.Packets = knftables.PtrTo(v)
				n++
			}
		}
		if n != 1 {
			t.Fatalf("found %d ingress deny counters, want 1", n)
		}
	}
	setDenyCounter(5)
	if got := counterValue(t, reg, "x", "deny-web", "ingress", "deny"); got != 5 {
		t.Fatalf("policy deny counter = %v, want 5", got)
	}
	setDenyCounter(7)
	mustCreate(client.NetworkingV1().NetworkPolicies("x").Delete(ctx, "deny-web", metav1.DeleteOptions{}))
	waitFor(t, "policy delete un-isolates the pod", func() bool { return !mapHas(policy.MapIngressPods)() })
	nft.RLock()
	for name := range nft.Table.Chains {
		if strings.HasPrefix(name, "ing-") || strings.HasPrefix(name, "eg-") {
			t.Errorf("stale group chain %s left after the policy was deleted", name)
		}
	}
	nft.RUnlock()

	if got := counterValue(t, reg, "x", "deny-web", "ingress", "deny"); got != 7 {
		t.Fatalf("after the policy's group was deleted, deny counter = %v, want 7", got)
	}
	var samples, txCount uint64
	var txSum float64
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "trellis_policy_programming_latency_seconds":
			samples = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		case "trellis_policy_transaction_operations":
			txCount = mf.GetMetric()[0].GetHistogram().GetSampleCount()
			txSum = mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	if samples < 4 {
		t.Fatalf("latency histogram has %d samples, want >= 4 (one per change)", samples)
	}
	// One observation per committed transaction, each holding at least the
	// table and its static objects.
	if txCount < 4 || txSum < float64(txCount)*10 {
		t.Fatalf("transaction operations histogram: %d transactions, %v operations; want >= 4 transactions of >= 10 operations",
			txCount, txSum)
	}
	cancel()
	<-done
}

// gaugeValue returns the value of the single series of a gauge in reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single-series gauge %s", name)
	return 0
}

// counterValue returns trellis_policy_packets_total for one policy.
func counterValue(t *testing.T, reg *prometheus.Registry, ns, name, dir, verdict string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"namespace": ns, "policy": name, "direction": dir, "verdict": verdict}
	for _, mf := range mfs {
		if mf.GetName() != "trellis_policy_packets_total" {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// A disabled controller needs only the table's interface and keeps the
// table to anti-spoofing alone at every sync (enforcement turned off after
// an earlier run with it on): no policy chain, set or map is left.
func TestDisabledControllerKeepsAntiSpoofingOnly(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	w.addNamespace("x", nil)
	w.addPod("x", "a", "n1", "10.244.1.10", false, map[string]string{"pod": "a"})
	w.addPolicy(np("x", "deny-a", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), PolicyTypes: ingressOnly}))
	nft := knftables.NewFake(knftables.InetFamily, policy.TableName)
	if _, err := policy.Apply(ctx, nft, policy.Compile(w.snapshot("n1"))); err != nil {
		t.Fatal(err)
	}
	want := knftables.NewFake(knftables.InetFamily, policy.TableName)
	if _, err := policy.Apply(ctx, want, policy.AntiSpoofOnly(0)); err != nil {
		t.Fatal(err)
	}
	c, err := policy.New(policy.Config{Disabled: true, NFT: nft})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := c.Sync(ctx); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		if got := nft.Dump(); got != want.Dump() {
			t.Fatalf("sync %d: table\n%s\nwant anti-spoofing only:\n%s", i, got, want.Dump())
		}
	}
	if !strings.Contains(want.Dump(), policy.ChainAntiSpoof) {
		t.Fatalf("anti-spoofing-only table has no %s chain:\n%s", policy.ChainAntiSpoof, want.Dump())
	}
	if _, err := policy.New(policy.Config{Disabled: true}); err == nil {
		t.Error("disabled controller without NFT accepted")
	}
}
