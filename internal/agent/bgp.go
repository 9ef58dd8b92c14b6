package agent

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// bgpDeps are the BGP speaker and the kernel side of its learned routes
// (internal/bgp/speaker, internal/bgp/kernelroutes). With newSpeaker or
// kernel nil the agent has no BGP built in: a configured BGP is reported
// off ("no BGP speaker built in") and nothing else changes.
type bgpDeps struct {
	newSpeaker func() bgp.Speaker
	kernel     bgp.KernelRoutes
}

// bgpAPI is the agent's access to the BGP API group (kubeclient.BGPClient).
type bgpAPI interface {
	Served(ctx context.Context) (bool, error)
	bgp.StatusWriter
}

// bgpServedInterval is how often the agent asks whether the BGP API is
// served: CRDs installed after the agent started turn BGP on within it,
// without a restart; CRDs removed turn it off.
// One discovery request per node and interval: on 1,000 nodes about 17
// requests a second, answered from the API server's discovery cache.
const bgpServedInterval = time.Minute

// bgpInformers runs the BGP informers while the API group is served.
type bgpInformers struct {
	lw     kubeclient.BGPListWatches
	api    bgpAPI
	ctl    *bgp.Controller
	period time.Duration

	mu      sync.Mutex
	sources *bgp.Sources // nil: not served
	// known: the last discovery answered and, served, the caches synced.
	known bool
}

// Sources is the controller's view: the synced caches (nil: not served),
// and whether that is known yet.
func (b *bgpInformers) Sources() (*bgp.Sources, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sources, b.known
}

func (b *bgpInformers) set(src *bgp.Sources) {
	b.mu.Lock()
	b.sources, b.known = src, true
	b.mu.Unlock()
	b.ctl.Trigger()
}

// run asks whether the group is served now and every period; it starts
// the informers when it is, and stops them when it no longer is.
func (b *bgpInformers) run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("bgp")
	var stop context.CancelFunc
	var wg sync.WaitGroup
	defer func() {
		if stop != nil {
			stop()
		}
		wg.Wait()
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(b.period)
		served, err := b.api.Served(ctx)
		if err != nil {
			// The API server could not say: keep what runs.
			logger.V(2).Info("Cannot tell whether the BGP API is served", "err", err)
			continue
		}
		switch {
		case !served && stop == nil:
			if _, known := b.Sources(); !known {
				b.set(nil)
			}
		case served && stop == nil:
			infCtx, cancel := context.WithCancel(ctx)
			stop = cancel
			src, infs, err := b.start(infCtx, &wg)
			if err != nil {
				logger.Error(err, "Cannot watch the BGP objects")
				cancel()
				stop = nil
				continue
			}
			logger.Info("The BGP API is served; watching the BGP objects")
			if !cache.WaitForCacheSync(infCtx.Done(), infs...) {
				return
			}
			b.set(src)
		case !served && stop != nil:
			logger.Info("The BGP API is no longer served (CRDs removed); BGP turns off")
			stop()
			wg.Wait()
			stop = nil
			b.set(nil)
		}
	}
}

// start runs one informer per BGP source; each change triggers a sync.
func (b *bgpInformers) start(ctx context.Context, wg *sync.WaitGroup) (*bgp.Sources, []cache.InformerSynced, error) {
	var synced []cache.InformerSynced
	add := func(lw cache.ListerWatcher, obj runtime.Object) (cache.Store, error) {
		inf := cache.NewSharedIndexInformerWithOptions(newReconnecting(lw, reconnectInterval), obj, cache.SharedIndexInformerOptions{})
		if err := inf.SetTransform(trimForCache); err != nil {
			return nil, fmt.Errorf("informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(syncrunner.EventHandler(b.ctl.Trigger)); err != nil {
			return nil, fmt.Errorf("event handler for %T: %w", obj, err)
		}
		synced = append(synced, inf.HasSynced)
		wg.Add(1)
		go func() {
			defer wg.Done()
			inf.RunWithContext(ctx)
		}()
		return inf.GetStore(), nil
	}
	src := &bgp.Sources{}
	var err error
	for _, s := range []struct {
		lw  cache.ListerWatcher
		obj runtime.Object
		to  *bgp.Store
	}{
		{b.lw.Configurations, &v1alpha1.BGPConfiguration{}, &src.Configurations},
		{b.lw.Peers, &v1alpha1.BGPPeer{}, &src.Peers},
		{b.lw.Advertisements, &v1alpha1.BGPAdvertisement{}, &src.Advertisements},
		{b.lw.Services, &v1.Service{}, &src.Services},
		{b.lw.Passwords, &v1.Secret{}, &src.Passwords},
	} {
		if *s.to, err = add(s.lw, s.obj); err != nil {
			return nil, nil, err
		}
	}
	return src, synced, nil
}

// newBGP builds the BGP controller and its informers' supervisor (nil,
// nil without BGP API access: tests).
func newBGP(cfg *config.Config, d deps, nodes corelisters.NodeLister, recorder record.EventRecorder,
	m *metrics.Metrics, opts syncrunner.Options) (*bgp.Controller, *bgpInformers, error) {
	if d.api.bgp == nil {
		return nil, nil, nil
	}
	bc := bgp.Config{NodeName: cfg.NodeName, Mode: cfg.RoutingMode, ClusterCIDRs: cfg.ClusterCIDRs, Nodes: nodes,
		Status: d.api.bgp, BootID: podlink.BootID, Recorder: recorder, Registerer: m.Registry, Sync: opts}
	if d.bgp.newSpeaker != nil && d.bgp.kernel != nil {
		bc.NewSpeaker, bc.Kernel = d.bgp.newSpeaker, d.bgp.kernel
	}
	infs := &bgpInformers{lw: d.api.bgpLW, api: d.api.bgp, period: bgpServedInterval}
	bc.Sources = infs.Sources
	ctl, err := bgp.New(bc)
	if err != nil {
		return nil, nil, err
	}
	infs.ctl = ctl
	return ctl, infs, nil
}

// bgpNodeHandler triggers the BGP controller on Node changes it reads
// (labels select peers and carry the ASN override; addresses and pod
// CIDRs make sessions and paths), not on status heartbeats.
func bgpNodeHandler(trigger func()) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { trigger() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*v1.Node)
			n, ok2 := newObj.(*v1.Node)
			if !ok1 || !ok2 || relevantChange(o, n) || !reflect.DeepEqual(o.Labels, n.Labels) {
				trigger()
			}
		},
		DeleteFunc: func(any) { trigger() },
	}
}

// newBGPDeps returns the BGP parts built into this agent: the speaker
// (internal/bgp/speaker, GoBGP) and the kernel routes
// (internal/bgp/kernelroutes, route protocol 159). Empty: BGP is not
// built in; a configured BGP is then reported off with that reason.
func newBGPDeps(logger klog.Logger) bgpDeps {
	_ = logger // the speaker's logger
	return bgpDeps{}
}
