package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	fcache "k8s.io/client-go/tools/cache/testing"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/kubeclient"
)

type fakeBGPAPI struct {
	mu     sync.Mutex
	served bool
	asked  int
}

func (f *fakeBGPAPI) Served(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	return f.served, nil
}

func (f *fakeBGPAPI) set(served bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.served = served
}

func (f *fakeBGPAPI) ApplyNodeStatus(_ context.Context, st *v1alpha1.BGPNodeStatus) (*v1alpha1.BGPNodeStatus, error) {
	return st, nil
}

// The BGP informers run only while the API group is served: CRDs
// installed after the agent started turn BGP on without a restart, and
// their removal turns it off.
func TestBGPInformersFollowServedAPI(t *testing.T) {
	cfgSrc := fcache.NewFakeControllerSource()
	cfgSrc.Add(&v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.BGPConfigurationSpec{ASN: 64512}})
	lw := kubeclient.BGPListWatches{Configurations: cfgSrc, Peers: fcache.NewFakeControllerSource(),
		Advertisements: fcache.NewFakeControllerSource(), Services: fcache.NewFakeControllerSource(), Passwords: fcache.NewFakeControllerSource()}
	api := &fakeBGPAPI{}
	infs := &bgpInformers{lw: lw, api: api, period: 10 * time.Millisecond}
	ctl, err := bgp.New(bgp.Config{NodeName: "n1", Nodes: corelisters.NewNodeLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})),
		Sources: infs.Sources})
	if err != nil {
		t.Fatal(err)
	}
	infs.ctl = ctl
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); infs.run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	sources := func() *bgp.Sources { s, _ := infs.Sources(); return s }
	waitFor("two discovery checks", func() bool { api.mu.Lock(); defer api.mu.Unlock(); return api.asked >= 2 })
	if src, known := infs.Sources(); src != nil || !known {
		t.Fatalf("sources %v known %v while the API is not served; want nil, known", src, known)
	}
	api.set(true)
	waitFor("sources", func() bool { return sources() != nil })
	src := sources()
	if objs := src.Configurations.List(); len(objs) != 1 || objs[0].(*v1alpha1.BGPConfiguration).Name != "default" {
		t.Errorf("configurations %v", objs)
	}
	// A configuration exists: the Services and the passwords are watched
	// too, and the sources are only handed out with them.
	if src.Services == nil || src.Passwords == nil {
		t.Error("configured: sources without Services or passwords")
	}
	api.set(false)
	waitFor("sources gone", func() bool { return sources() == nil })
}

// Node heartbeats do not trigger the BGP controller; label changes do.
func TestBGPNodeHandler(t *testing.T) {
	n := 0
	h := bgpNodeHandler(func() { n++ })
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", ResourceVersion: "1", Labels: map[string]string{"a": "b"}}}
	hb := node.DeepCopy()
	hb.ResourceVersion = "2"
	h.OnUpdate(node, hb)
	if n != 0 {
		t.Error("a heartbeat triggered a BGP sync")
	}
	lb := hb.DeepCopy()
	lb.Labels["bgp.trellis.dev/asn"] = "64513"
	h.OnUpdate(hb, lb)
	if n != 1 {
		t.Error("a label change did not trigger a BGP sync")
	}
}

// Without a BGPConfiguration the agent caches no Service (and no Secret);
// once one is created, it does.
func TestBGPServicesWatchedOnlyWhenConfigured(t *testing.T) {
	cfgSrc := fcache.NewFakeControllerSource()
	svcSrc := fcache.NewFakeControllerSource()
	svcSrc.Add(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web"}})
	lw := kubeclient.BGPListWatches{Configurations: cfgSrc, Peers: fcache.NewFakeControllerSource(),
		Advertisements: fcache.NewFakeControllerSource(), Services: svcSrc, Passwords: fcache.NewFakeControllerSource()}
	infs := &bgpInformers{lw: lw, api: &fakeBGPAPI{served: true}, period: time.Hour}
	ctl, err := bgp.New(bgp.Config{NodeName: "n1", Nodes: corelisters.NewNodeLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})),
		Sources: infs.Sources})
	if err != nil {
		t.Fatal(err)
	}
	infs.ctl = ctl
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); infs.run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	var src *bgp.Sources
	for src == nil && time.Now().Before(deadline) {
		src, _ = infs.Sources()
		time.Sleep(5 * time.Millisecond)
	}
	if src == nil || src.Services != nil || src.Passwords != nil {
		t.Fatalf("not configured: sources %+v; want the BGP objects only", src)
	}
	cfgSrc.Add(&v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	for time.Now().Before(deadline) {
		if src, known := infs.Sources(); known && src != nil && src.Services != nil {
			if got := src.Services.List(); len(got) != 1 {
				t.Errorf("services %v", got)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("configured: the Services were never watched")
}
