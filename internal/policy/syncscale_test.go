package policy_test

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/slim"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// apiScale is a cluster of API objects at scale for the controller: pods
// pods on pods/100 nodes (100 on the local node n0, each with an
// interface), 100 namespaces and the policies of scaleSnapshot.
type apiScale struct {
	pods     []*corev1.Pod
	nss      []*corev1.Namespace
	policies []*networkingv1.NetworkPolicy
	ifaces   []podlink.Interface
}

// scalePodAddr is the address of pod i: 10.0.0.0 + i + 1.
func scalePodAddr(i int) netip.Addr {
	n := uint32(10)<<24 + uint32(i) + 1
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// scalePod is pod i of apiScale.
func scalePod(r *rand.Rand, i, nodes int) *corev1.Pod {
	node := i % nodes
	ip := scalePodAddr(i).String()
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("p%d", i),
			UID:    types.UID(fmt.Sprintf("uid-%d", i)),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", r.Intn(20)), "tier": fmt.Sprintf("tier%d", r.Intn(3))}},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("n%d", node), Containers: []corev1.Container{{Name: "c",
			Ports: []corev1.ContainerPort{{Name: "http", Protocol: corev1.ProtocolTCP, ContainerPort: int32(8000 + r.Intn(3))}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func newAPIScale(pods, policies int) *apiScale {
	r := rand.New(rand.NewSource(1))
	s := &apiScale{policies: scaleSnapshot(0, policies).Policies}
	for i := 0; i < 100; i++ {
		s.nss = append(s.nss, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"kubernetes.io/metadata.name": fmt.Sprintf("ns%d", i), "team": fmt.Sprintf("t%d", i%10)}}})
	}
	nodes := max(pods/100, 1)
	for i := 0; i < pods; i++ {
		p := scalePod(r, i, nodes)
		s.pods = append(s.pods, p)
		if p.Spec.NodeName == "n0" {
			s.ifaces = append(s.ifaces, localIface(p, i))
		}
	}
	return s
}

// localIface is the host-side interface the plugin would give pod p.
func localIface(p *corev1.Pod, i int) podlink.Interface {
	return podlink.Interface{Name: fmt.Sprintf("trl%011x", i), Index: 100 + i,
		Addrs: []netip.Addr{netip.MustParseAddr(p.Status.PodIP)},
		Alias: podlink.Alias{PodNamespace: p.Namespace, PodName: p.Name, PodUID: string(p.UID)}}
}

// informers returns informers whose indexers hold s, pods as the agent's
// informer transform keeps them (not started: the controller's listers
// read them, its handlers see nothing).
func (s *apiScale) informers() policy.Informers {
	inf := policy.Informers{
		Pods:            cache.NewSharedIndexInformer(nil, &corev1.Pod{}, 0, cache.Indexers{}),
		Namespaces:      cache.NewSharedIndexInformer(nil, &corev1.Namespace{}, 0, cache.Indexers{}),
		NetworkPolicies: cache.NewSharedIndexInformer(nil, &networkingv1.NetworkPolicy{}, 0, cache.Indexers{}),
	}
	for _, p := range s.pods {
		_ = inf.Pods.GetIndexer().Add(slim.PodOf(p, nil))
	}
	for _, ns := range s.nss {
		_ = inf.Namespaces.GetIndexer().Add(ns)
	}
	for _, np := range s.policies {
		_ = inf.NetworkPolicies.GetIndexer().Add(np)
	}
	return inf
}

// listIfaces is a fixed InterfaceLister.
type listIfaces []podlink.Interface

func (l listIfaces) PodInterfaces() ([]podlink.Interface, error) { return l, nil }

// countingNFT is a fake whose transactions are counted, not run: the Go
// side of a sync without the fake's own cost.
type countingNFT struct {
	*knftables.Fake
	ops []int
}

func (c *countingNFT) Run(_ context.Context, tx *knftables.Transaction) error {
	c.ops = append(c.ops, tx.NumOperations())
	return nil
}

// quietWatch is a table guard's watch on a table nobody else touches:
// every generation read advances by one (the sync's own commit) and no
// notification ever comes but the first (state unknown).
type quietWatch struct {
	mu  sync.Mutex
	gen uint32
}

func (q *quietWatch) Generation() (uint32, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.gen++
	return q.gen, nil
}

func (q *quietWatch) Run(ctx context.Context, fn func(nftwatch.Change)) error {
	fn(nftwatch.Change{Lost: true, At: time.Now()})
	<-ctx.Done()
	return nil
}

// BenchmarkControllerSync profiles the controller's sync (listers →
// snapshot → compile → diff → transaction built) at 10,000 and 100,000
// pods with 1,000 policies, after one pod was added:
//
//	go test -run '^$' -bench ControllerSync -cpuprofile cpu.out ./internal/policy/
func BenchmarkControllerSync(b *testing.B) {
	for _, pods := range []int{10000, 100000} {
		for _, change := range []string{"pod", "policy"} {
			b.Run(fmt.Sprintf("pods=%d/change=%s", pods, change), func(b *testing.B) { benchmarkControllerSync(b, pods, change) })
		}
	}
}

// benchmarkControllerSync: one pod added elsewhere (change=pod), or one
// policy's ingress peer changed (change=policy), then a sync.
func benchmarkControllerSync(b *testing.B, pods int, change string) {
	{
		{
			s := newAPIScale(pods, 1000)
			inf := s.informers()
			nft := &countingNFT{Fake: knftables.NewFake(knftables.InetFamily, policy.TableName)}
			c, err := policy.New(policy.Config{NodeName: "n0", Informers: inf, NFT: nft, Interfaces: listIfaces(s.ifaces),
				Watch: &quietWatch{}, Sync: syncrunner.Options{MaxInterval: time.Hour}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { _ = c.Watch(ctx) }()
			for !c.GuardLive() {
				time.Sleep(time.Millisecond)
			}
			for range 2 { // the rewrite (state unknown), then a trusted sync
				if err := c.Sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
			r := rand.New(rand.NewSource(2))
			var sum policy.SyncPhases
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if change == "policy" {
					np := s.policies[i%len(s.policies)].DeepCopy()
					np.Spec.Ingress[0].From[0].PodSelector.MatchLabels["tier"] = fmt.Sprintf("tier%d", i%3)
					if err := inf.NetworkPolicies.GetIndexer().Update(np); err != nil {
						b.Fatal(err)
					}
				} else {
					p := scalePod(r, pods+i, pods/100)
					p.Spec.NodeName = "elsewhere"
					sp := slim.PodOf(p, nil)
					if err := inf.Pods.GetIndexer().Add(sp); err != nil {
						b.Fatal(err)
					}
					c.PodEvent(sp)
				}
				if err := c.Sync(ctx); err != nil {
					b.Fatal(err)
				}
				ph := c.LastPhases()
				sum.Snapshot += ph.Snapshot
				sum.Compile += ph.Compile
				sum.Diff += ph.Diff
				sum.Observe += ph.Observe
			}
			n := float64(b.N) * float64(time.Millisecond)
			b.ReportMetric(float64(sum.Snapshot)/n, "ms-snapshot")
			b.ReportMetric(float64(sum.Compile)/n, "ms-compile")
			b.ReportMetric(float64(sum.Diff)/n, "ms-diff")
			b.ReportMetric(float64(sum.Observe)/n, "ms-observe")
			b.ReportMetric(float64(nft.ops[len(nft.ops)-1]), "ops/sync")
		}
	}
}
