package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// scaleWorld describes a simulated cluster of API-only objects shaped like
// the ones a real API server returns (kubelet-written status, scheduler
// conditions, managed fields, several labels), for the agent's informers.
// Pods come in ReplicaSets of 20 (one label set, spread over the nodes).
type scaleWorld struct {
	nodes, pods, namespaces, policies int
}

func (w scaleWorld) nodeName(i int) string { return fmt.Sprintf("ghost-%05d", i) }
func (w scaleWorld) nsName(i int) string   { return fmt.Sprintf("team-%04d", i) }

// nodeCIDR is node i's /27 in 10.64.0.0/14 (5,000 nodes × 32 addresses).
func (w scaleWorld) nodeCIDR(i int) netip.Prefix {
	base := netip.MustParseAddr("10.64.0.0").As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(i)*32
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), 27)
}

func managed() []metav1.ManagedFieldsEntry {
	return []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:status":{"f:conditions":{},"f:podIP":{},"f:podIPs":{}}}`)}}
}

func (w scaleWorld) node(i int) *v1.Node {
	name, cidr := w.nodeName(i), w.nodeCIDR(i).String()
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(fmt.Sprintf("uid-node-%d", i)), ResourceVersion: strconv.Itoa(10 + i),
			CreationTimestamp: metav1.Now(), ManagedFields: managed(),
			Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": "m5.large", "topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%3)},
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
		Spec: v1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status: v1.NodeStatus{
			Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: fmt.Sprintf("10.1.%d.%d", i/250, 1+i%250)}, {Type: v1.NodeHostName, Address: name}},
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
				{Type: v1.NodeNetworkUnavailable, Status: v1.ConditionFalse, Reason: "TrellisReady"}},
			NodeInfo: v1.NodeSystemInfo{KubeletVersion: "v1.37.2", OSImage: "Debian GNU/Linux 12", KernelVersion: "6.1.0"},
		},
	}
}

func (w scaleWorld) pod(i int) *v1.Pod {
	node := i % w.nodes
	addr := w.nodeCIDR(node).Addr().As4()
	addr[3] += byte(2 + (i/w.nodes)%29)
	ip := netip.AddrFrom4(addr).String()
	ns := w.nsName(i % w.namespaces)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d-%08x", (i/20)%50, i), Namespace: ns, UID: types.UID(fmt.Sprintf("uid-pod-%d", i)),
			ResourceVersion: strconv.Itoa(100000 + i), CreationTimestamp: metav1.Now(), ManagedFields: managed(),
			GenerateName: fmt.Sprintf("app-%d-", (i/20)%50),
			Labels:       map[string]string{"app": fmt.Sprintf("a%d", (i/20)%50), "pod-template-hash": fmt.Sprintf("%08x", i/20)},
			Annotations:  map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-12-01T00:00:00Z"}},
		Spec: v1.PodSpec{NodeName: w.nodeName(node), ServiceAccountName: "default",
			Containers: []v1.Container{{Name: "app", Image: "registry.example/app:v1", Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: v1.ProtocolTCP}}}}},
		Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: ip, PodIPs: []v1.PodIP{{IP: ip}}, HostIP: fmt.Sprintf("10.1.%d.%d", node/250, 1+node%250),
			Conditions:        []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue}, {Type: v1.PodScheduled, Status: v1.ConditionTrue}},
			ContainerStatuses: []v1.ContainerStatus{{Name: "app", Ready: true, Image: "registry.example/app:v1", ContainerID: fmt.Sprintf("containerd://%064x", i)}}},
	}
}

func (w scaleWorld) namespace(i int) *v1.Namespace {
	name := w.nsName(i)
	return &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-ns-" + name), ResourceVersion: strconv.Itoa(i + 1),
		Labels: map[string]string{"kubernetes.io/metadata.name": name, "team": fmt.Sprintf("t%d", i%10)}}}
}

// networkPolicy i isolates app a<i%50> in namespace i%namespaces: ingress
// on port 8080 from app a<(i+1)%50> of the namespaces of one team.
func (w scaleWorld) networkPolicy(i int) *networkingv1.NetworkPolicy {
	port := intstr.FromInt32(8080)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("np-%d", i), Namespace: w.nsName(i % w.namespaces), UID: types.UID(fmt.Sprintf("uid-np-%d", i)), ResourceVersion: strconv.Itoa(i + 1)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%50)}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", (i+1)%50)}},
				}},
			}},
		},
	}
}

// worldLW serves n objects made by make (built as they are sent, so the
// source keeps nothing alive): as a stream of watch events ending in the
// initial-events bookmark, as an API server serves the reflector's
// streaming list (the agent's client uses it), or, asked for a list, as
// one list.
type worldLW struct {
	n    int
	make func(i int) runtime.Object
	list func(n int) runtime.Object
}

func (l worldLW) List(metav1.ListOptions) (runtime.Object, error) { return l.list(l.n), nil }

func (l worldLW) Watch(o metav1.ListOptions) (watch.Interface, error) {
	w := &streamWatch{ch: make(chan watch.Event, 128), stop: make(chan struct{})}
	go func() {
		defer close(w.ch)
		if o.SendInitialEvents != nil && *o.SendInitialEvents {
			for i := 0; i < l.n; i++ {
				if !w.send(watch.Event{Type: watch.Added, Object: l.make(i)}) {
					return
				}
			}
			end := l.make(0)
			m, _ := meta.Accessor(end)
			m.SetResourceVersion("1")
			m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
			if !w.send(watch.Event{Type: watch.Bookmark, Object: end}) {
				return
			}
		}
		<-w.stop
	}()
	return w, nil
}

func (worldLW) IsWatchListSemanticsUnSupported() bool { return false }

type streamWatch struct {
	ch   chan watch.Event
	stop chan struct{}
	once sync.Once
}

func (w *streamWatch) send(e watch.Event) bool {
	select {
	case w.ch <- e:
		return true
	case <-w.stop:
		return false
	}
}

func (w *streamWatch) Stop()                          { w.once.Do(func() { close(w.stop) }) }
func (w *streamWatch) ResultChan() <-chan watch.Event { return w.ch }

func (w scaleWorld) listWatches() kubeclient.ListWatches {
	return kubeclient.ListWatches{
		Nodes: worldLW{w.nodes, func(i int) runtime.Object { return w.node(i) }, func(n int) runtime.Object {
			l := &v1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: make([]v1.Node, n)}
			for i := range l.Items {
				l.Items[i] = *w.node(i)
			}
			return l
		}},
		Pods: worldLW{w.pods, func(i int) runtime.Object { return w.pod(i) }, func(n int) runtime.Object {
			l := &v1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: make([]v1.Pod, n)}
			for i := range l.Items {
				l.Items[i] = *w.pod(i)
			}
			return l
		}},
		Namespaces: worldLW{w.namespaces, func(i int) runtime.Object { return w.namespace(i) }, func(n int) runtime.Object {
			l := &v1.NamespaceList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: make([]v1.Namespace, n)}
			for i := range l.Items {
				l.Items[i] = *w.namespace(i)
			}
			return l
		}},
		NetworkPolicies: worldLW{w.policies, func(i int) runtime.Object { return w.networkPolicy(i) }, func(n int) runtime.Object {
			l := &networkingv1.NetworkPolicyList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: make([]networkingv1.NetworkPolicy, n)}
			for i := range l.Items {
				l.Items[i] = *w.networkPolicy(i)
			}
			return l
		}},
	}
}

// scaleAgent is the part of the agent whose memory grows with the cluster:
// its informers and the controllers reading them, with their desired state
// computed once.
type scaleAgent struct {
	infs     informerSet
	routes   *routing.Controller
	syncs    map[string]func(context.Context) error
	informed time.Duration            // informers started → synced
	first    map[string]time.Duration // each controller's first sync
	firstCPU map[string]time.Duration // the process's CPU time during it
}

func startScaleAgent(ctx context.Context, t testing.TB, w scaleWorld) *scaleAgent {
	t.Helper()
	cfg := config.Default()
	cfg.NodeName = w.nodeName(0)
	cfg.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.64.0.0/14")}
	cfg.ApplyDefaults()
	lw := w.listWatches()
	a := &scaleAgent{first: map[string]time.Duration{}, firstCPU: map[string]time.Duration{}}
	a.infs.transform = newTransform(cfg.NodeName).apply // as run does
	m := metrics.New(metrics.Build{Version: "test"})
	nodeInf, err := a.infs.add(lw.Nodes, &v1.Node{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := corelisters.NewNodeLister(nodeInf.GetIndexer())
	a.routes, err = routing.New(routing.Config{NodeName: cfg.NodeName, Params: routing.ParamsFromConfig(cfg), Nodes: nodes,
		Kernel: noKernel{}, Registerer: m.Registry})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(any) { a.routes.Trigger() }}); err != nil {
		t.Fatal(err)
	}
	pc, err := newPolicyController(cfg, lw, &a.infs, policyKernel{nft: &discardNFT{Fake: knftables.NewFake(knftables.InetFamily, "trellis-policy")}},
		podlink.NewWatcher(podlink.WatchOptions{}), nil, m, syncrunner.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.syncs = map[string]func(context.Context) error{"routing": a.routes.Sync, "policy": pc.Sync}
	start := time.Now()
	a.infs.start(ctx)
	if err := a.infs.waitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	a.informed = time.Since(start)
	if f := os.Getenv("TRELLIS_SCALE_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	for name, sync := range a.syncs {
		start, cpu := time.Now(), cpuTime(t)
		if err := sync(ctx); err != nil {
			t.Fatalf("first %s sync: %v", name, err)
		}
		a.first[name], a.firstCPU[name] = time.Since(start), cpuTime(t)-cpu
	}
	return a
}

// liveHeap is the heap in use after two collections, in bytes.
func liveHeap() uint64 {
	var ms goruntime.MemStats
	goruntime.GC()
	goruntime.GC()
	goruntime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// scaleFromEnv reads TRELLIS_SCALE=nodes/pods (default def).
func scaleFromEnv(t testing.TB, def scaleWorld) scaleWorld {
	w := def
	if s := os.Getenv("TRELLIS_SCALE"); s != "" {
		n, p, ok := strings.Cut(s, "/")
		var err1, err2 error
		w.nodes, err1 = strconv.Atoi(n)
		w.pods, err2 = strconv.Atoi(p)
		if !ok || err1 != nil || err2 != nil || w.nodes < 1 || w.pods < 1 {
			t.Fatalf("TRELLIS_SCALE=%q, want nodes/pods", s)
		}
	}
	w.namespaces = max(1, w.pods/200)
	w.policies = max(1, w.pods/100)
	return w
}

// The agent's heap per watched pod (informer caches and the controllers'
// desired state), measured by the difference between two cluster sizes so
// that fixed costs cancel out. TRELLIS_SCALE=nodes/pods sets the larger
// size (default 500/10000: at 2,000 pods the margin's noise is ±5 %; the
// smaller is a tenth of it); TRELLIS_SCALE_HEAPPROFILE=file
// writes a heap profile at the larger size, TRELLIS_SCALE_CPUPROFILE=file
// a CPU profile of the controllers' first syncs (at both sizes: the file
// ends with the larger).
func TestAgentHeapPerPod(t *testing.T) {
	big := scaleFromEnv(t, scaleWorld{nodes: 500, pods: 10000})
	small := scaleWorld{nodes: max(1, big.nodes/10), pods: max(1, big.pods/10)}
	small.namespaces, small.policies = max(1, small.pods/200), max(1, small.pods/100)
	measure := func(w scaleWorld, profile string) (heap uint64, a *scaleAgent) {
		ctx, cancel := context.WithCancel(context.Background())
		defer func() { cancel(); a.infs.wait() }()
		before := liveHeap()
		a = startScaleAgent(ctx, t, w)
		after := liveHeap()
		if profile != "" {
			f, err := os.Create(profile)
			if err != nil {
				t.Fatal(err)
			}
			if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		goruntime.KeepAlive(a)
		return after - before, a
	}
	hs, _ := measure(small, "")
	hb, a := measure(big, os.Getenv("TRELLIS_SCALE_HEAPPROFILE"))
	perPod := float64(hb-hs) / float64(big.pods-small.pods)
	t.Logf("%d nodes / %d pods / %d namespaces / %d policies: live heap %.1f MiB (%d nodes / %d pods: %.1f MiB); margin %.0f B per pod (nodes, namespaces and policies grow with it)",
		big.nodes, big.pods, big.namespaces, big.policies, float64(hb)/(1<<20), small.nodes, small.pods, float64(hs)/(1<<20), perPod)
	t.Logf("informers synced in %v (list built in-process, transform, index); first syncs: routing %v (CPU %v), policy %v (CPU %v)",
		a.informed.Round(time.Millisecond), a.first["routing"].Round(time.Millisecond), a.firstCPU["routing"].Round(time.Millisecond),
		a.first["policy"].Round(time.Millisecond), a.firstCPU["policy"].Round(time.Millisecond))
	// Slim pods with shared label sets cost ~550 B each with their share of
	// nodes, namespaces and policies; a trimmed core/v1 Pod cost ~2,500.
	// The policy controller's address index (podView: who holds each pod
	// address, ~90 B per pod) is what lets a sync cost what changed.
	if perPod > maxHeapPerPod {
		t.Errorf("the agent's heap grows by %.0f B per pod, want at most %d", perPod, maxHeapPerPod)
	}
}

// maxHeapPerPod bounds TestAgentHeapPerPod's margin.
const maxHeapPerPod = 900

// vmRSS is this process's resident set in bytes (/proc/self/status).
func vmRSS(tb testing.TB) uint64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// BenchmarkAgentAtScale reports what the agent's resident set grows by
// with the cluster (TRELLIS_SCALE=nodes/pods, default 100/2000): the peak
// of the process's VmRSS over the informers' streaming list, the first
// syncs and 10 more rounds of full syncs (each as much garbage as a
// sync at that size makes), 5 s later, minus the VmRSS before. Run it
// alone, in its own process (-benchtime 1x): a GOGC or GOMEMLIMIT in the
// environment applies as it would to the agent.
func BenchmarkAgentAtScale(b *testing.B) {
	w := scaleFromEnv(b, scaleWorld{nodes: 100, pods: 2000})
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		goruntime.GC()
		rss0, heap0 := vmRSS(b), liveHeap()
		peak := rss0
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				peak = max(peak, vmRSS(b))
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		a := startScaleAgent(ctx, b, w)
		for round := 0; round < 10; round++ {
			for name, sync := range a.syncs {
				if err := sync(ctx); err != nil {
					b.Fatalf("%s sync: %v", name, err)
				}
			}
		}
		if os.Getenv("TRELLIS_SCALE_FREEOS") != "" {
			debug.FreeOSMemory() // what is resident beyond the free heap
		}
		time.Sleep(5 * time.Second)
		close(stop)
		<-sampled
		settled := vmRSS(b)
		heap := liveHeap() - heap0
		b.ReportMetric(float64(peak-rss0)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(settled-rss0)/(1<<20), "settled-RSS-MiB")
		b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
		b.ReportMetric(a.informed.Seconds(), "informers-s")
		b.ReportMetric(a.first["routing"].Seconds(), "routing-first-s")
		b.ReportMetric(a.first["policy"].Seconds(), "policy-first-s")
		b.ReportMetric(a.firstCPU["routing"].Seconds(), "routing-first-cpu-s")
		b.ReportMetric(a.firstCPU["policy"].Seconds(), "policy-first-cpu-s")
		goruntime.KeepAlive(a)
		cancel()
		a.infs.wait()
	}
}

// waitForSync returns once the given informers have synced (not waiting
// for others), and with an error when ctx ends first.
func TestWaitForSyncWaitsForTheGivenCaches(t *testing.T) {
	w := scaleWorld{nodes: 3, pods: 10, namespaces: 1, policies: 1}
	lw := w.listWatches()
	var infs informerSet
	nodes, err := infs.add(lw.Nodes, &v1.Node{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release) // after the informers stopped: lets the stuck source go
	blocked := worldLW{n: 1, make: func(i int) runtime.Object { <-release; return w.pod(i) },
		list: func(int) runtime.Object { <-release; return &v1.PodList{} }}
	pods, err := infs.add(blocked, &v1.Pod{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); infs.wait() }()
	infs.start(ctx)
	if err := waitForSync(ctx, nodes); err != nil {
		t.Fatalf("node cache: %v", err)
	}
	if n := len(nodes.GetStore().List()); n != 3 {
		t.Errorf("node cache holds %d nodes after sync, want 3", n)
	}
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	if err := infs.waitForSync(short); err == nil || pods.HasSynced() {
		t.Errorf("waitForSync of a cache that cannot sync = %v", err)
	}
}
