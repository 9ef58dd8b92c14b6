package policy_test

import (
	"context"
	"math/rand"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// slowCounters is the knftables fake whose ListCounters answers after a
// random pause, as `nft` does under load: overlapping reads then return in
// another order than they were made.
type slowCounters struct {
	*knftables.Fake
	reads atomic.Int64
}

func (s *slowCounters) ListCounters(ctx context.Context) ([]*knftables.Counter, error) {
	s.reads.Add(1)
	s.RLock() // the fake's ListCounters does not lock
	cs, err := s.Fake.ListCounters(ctx)
	// The fake hands out its own objects: copy the values read now.
	out := make([]*knftables.Counter, 0, len(cs))
	for _, c := range cs {
		if c != nil {
			cp := *c
			if c.Packets != nil {
				cp.Packets = knftables.PtrTo(*c.Packets)
			}
			out = append(out, &cp)
		}
	}
	s.RUnlock()
	time.Sleep(time.Duration(rand.Intn(3000)) * time.Microsecond)
	return out, err
}

// denyWorld runs a policy controller over one pod isolated by a deny-all
// ingress policy and returns its registry and a setter of the kernel's
// ingress deny counter.
func denyWorld(t *testing.T, nft *slowCounters, cacheFor time.Duration) (*prometheus.Registry, func(uint64)) {
	ctx, cancel := context.WithCancel(context.Background())
	client := fake.NewSimpleClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"kubernetes.io/metadata.name": "x"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a"}, Spec: corev1.PodSpec{NodeName: "n1"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.10", PodIPs: []corev1.PodIP{{IP: "10.244.1.10"}}}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny"}})
	reg := prometheus.NewRegistry()
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := policy.New(policy.Config{
		NodeName: "n1", Informers: factoryInformers(factory), NFT: nft, Registerer: reg,
		Interfaces:      &staticIfaces{m: map[netip.Addr]string{netip.MustParseAddr("10.244.1.10"): "trl00000000aaa"}},
		Sync:            syncrunner.Options{MinInterval: 10 * time.Millisecond, MaxInterval: time.Hour},
		CounterCacheFor: cacheFor,
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; factory.Shutdown() })
	var deny *knftables.FakeCounter
	waitFor(t, "deny counter programmed", func() bool {
		nft.Lock()
		defer nft.Unlock()
		if nft.Table == nil {
			return false
		}
		for name, c := range nft.Table.Counters {
			if strings.HasPrefix(name, "ing-") && strings.HasSuffix(name, "-deny") {
				deny = c
			}
		}
		return deny != nil
	})
	return reg, func(v uint64) {
		nft.Lock()
		defer nft.Unlock()
		deny.Packets = knftables.PtrTo(v)
	}
}

// Overlapping scrapes whose kernel reads return out of order never count a
// packet twice: the exported total never exceeds the kernel's counter and
// ends equal to it.
func TestPolicyCountersConcurrentScrapes(t *testing.T) {
	nft := &slowCounters{Fake: knftables.NewFake(knftables.InetFamily, policy.TableName)}
	reg, set := denyWorld(t, nft, time.Nanosecond)
	var kernel atomic.Uint64
	stop := make(chan struct{})
	var bumps sync.WaitGroup
	bumps.Add(1)
	go func() { // the kernel counts packets while Prometheus scrapes
		defer bumps.Done()
		for v := uint64(1); ; v++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
			set(v * 10)
			kernel.Store(v * 10)
		}
	}()
	var scrapes sync.WaitGroup
	for i := 0; i < 8; i++ {
		scrapes.Add(1)
		go func() {
			defer scrapes.Done()
			for j := 0; j < 25; j++ {
				got := counterValue(t, reg, "x", "deny", "ingress", "deny")
				if k := kernel.Load(); got > float64(k) {
					t.Errorf("scrape saw %v packets, the kernel had counted %d", got, k)
				}
			}
		}()
	}
	scrapes.Wait()
	close(stop)
	bumps.Wait()
	if got, k := counterValue(t, reg, "x", "deny", "ingress", "deny"), kernel.Load(); got != float64(k) {
		t.Fatalf("after the scrapes: exported %v, kernel %d", got, k)
	}
	if nft.reads.Load() < 50 {
		t.Fatalf("only %d kernel reads: the scrapes did not overlap enough to prove anything", nft.reads.Load())
	}
}

// Any number of concurrent scrapers cost one kernel read per cache
// interval.
func TestPolicyCountersReadOncePerInterval(t *testing.T) {
	nft := &slowCounters{Fake: knftables.NewFake(knftables.InetFamily, policy.TableName)}
	const interval = 300 * time.Millisecond
	reg, set := denyWorld(t, nft, interval)
	set(3)
	time.Sleep(interval * 3 / 2) // past whatever the first syncs read (a read caches from its end)
	before := nft.reads.Load()
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := counterValue(t, reg, "x", "deny", "ingress", "deny"); got != 3 {
				t.Errorf("scrape saw %v, want 3", got)
			}
		}()
	}
	wg.Wait()
	if n := nft.reads.Load() - before; n != 1 {
		t.Fatalf("16 concurrent scrapes made %d kernel reads, want 1", n)
	}
	set(5)
	if got := counterValue(t, reg, "x", "deny", "ingress", "deny"); got != 3 {
		t.Fatalf("a scrape within the interval read the kernel again: %v, want the cached 3", got)
	}
	time.Sleep(interval)
	if got := counterValue(t, reg, "x", "deny", "ingress", "deny"); got != 5 {
		t.Fatalf("a scrape after the interval saw %v, want 5", got)
	}
}
