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
	"github.com/trellisnet/trellis/internal/bgp/kernelroutes"
	"github.com/trellisnet/trellis/internal/bgp/speakerproc"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// bgpDeps are the BGP speaker and the kernel side of its learned routes
// (internal/bgp/speakerproc, internal/bgp/kernelroutes). With newSpeaker or
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

// bgpInformers runs the BGP informers while the API group is served: the
// BGP objects' as soon as it is, the Services' and the passwords
// Secret's only once a BGPConfiguration "default" exists, so that an
// agent in a cluster that installed the CRDs but does not use BGP caches
// no Service.
type bgpInformers struct {
	lw     kubeclient.BGPListWatches
	api    bgpAPI
	ctl    *bgp.Controller
	period time.Duration
	// kick wakes run (a configuration appeared); created by run.
	kick chan struct{}

	mu sync.Mutex
	// sources: the BGP objects' synced caches (nil: not served); extra:
	// Services and Passwords, synced (nil: not started).
	sources, extra *bgp.Sources
	// known: the last discovery answered and, served, the caches synced.
	known bool
}

// Sources is the controller's view: the synced caches (nil: not served),
// and whether that is known yet. With a BGPConfiguration "default" it is
// not known until the Services and the passwords are in cache too.
func (b *bgpInformers) Sources() (*bgp.Sources, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sources == nil {
		return nil, b.known
	}
	if b.extra == nil {
		if configured(b.sources.Configurations) {
			b.wake()
			return nil, false
		}
		return b.sources, true
	}
	src := *b.sources
	src.Services, src.Passwords = b.extra.Services, b.extra.Passwords
	return &src, true
}

func configured(s bgp.Store) bool {
	for _, o := range s.List() {
		if c, ok := o.(*v1alpha1.BGPConfiguration); ok && c.Name == v1alpha1.ConfigurationName {
			return true
		}
	}
	return false
}

func (b *bgpInformers) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *bgpInformers) set(src, extra *bgp.Sources) {
	b.mu.Lock()
	b.sources, b.extra, b.known = src, extra, true
	b.mu.Unlock()
	b.ctl.Trigger()
}

// run asks whether the group is served now and every period; it starts
// the informers when it is, and stops them when it no longer is.
func (b *bgpInformers) run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("bgp")
	b.mu.Lock()
	if b.kick == nil {
		b.kick = make(chan struct{}, 1)
	}
	b.mu.Unlock()
	var stop context.CancelFunc
	var infCtx context.Context
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
		case <-b.kick:
			b.startExtra(infCtx, &wg, logger)
			continue
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
				b.set(nil, nil)
			}
		case served && stop == nil:
			c, cancel := context.WithCancel(ctx)
			infCtx, stop = c, cancel
			src, synced, err := b.start(infCtx, &wg, []source{
				{b.lw.Configurations, &v1alpha1.BGPConfiguration{}, func(s *bgp.Sources) *bgp.Store { return &s.Configurations }},
				{b.lw.Peers, &v1alpha1.BGPPeer{}, func(s *bgp.Sources) *bgp.Store { return &s.Peers }},
				{b.lw.Advertisements, &v1alpha1.BGPAdvertisement{}, func(s *bgp.Sources) *bgp.Store { return &s.Advertisements }},
			})
			if err != nil {
				logger.Error(err, "Cannot watch the BGP objects")
				stop()
				stop = nil
				continue
			}
			logger.Info("The BGP API is served; watching the BGP objects")
			if !cache.WaitForCacheSync(infCtx.Done(), synced...) {
				stop()
				return
			}
			b.set(src, nil)
		case !served && stop != nil:
			logger.Info("The BGP API is no longer served (CRDs removed); BGP turns off")
			stop()
			wg.Wait()
			stop = nil
			b.set(nil, nil)
		}
	}
}

// startExtra starts the Services and passwords informers once a
// configuration exists (and they are not running yet).
func (b *bgpInformers) startExtra(ctx context.Context, wg *sync.WaitGroup, logger klog.Logger) {
	b.mu.Lock()
	src, extra := b.sources, b.extra
	b.mu.Unlock()
	if ctx == nil || src == nil || extra != nil || !configured(src.Configurations) {
		return
	}
	extra, synced, err := b.start(ctx, wg, []source{
		{b.lw.Services, &v1.Service{}, func(s *bgp.Sources) *bgp.Store { return &s.Services }},
		{b.lw.Passwords, &v1.Secret{}, func(s *bgp.Sources) *bgp.Store { return &s.Passwords }},
	})
	if err != nil {
		logger.Error(err, "Cannot watch the Services and the BGP passwords")
		return
	}
	logger.Info("BGP is configured; watching Services and the Secret " + v1alpha1.PasswordSecretName)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	b.set(src, extra)
}

// source is one informer of start: where it lists from, its type, and
// the Sources field its cache goes to.
type source struct {
	lw  cache.ListerWatcher
	obj runtime.Object
	to  func(*bgp.Sources) *bgp.Store
}

// start runs one informer per source; each change triggers a sync (and,
// for the configurations, a check whether the Services are needed).
func (b *bgpInformers) start(ctx context.Context, wg *sync.WaitGroup, sources []source) (*bgp.Sources, []cache.InformerSynced, error) {
	var synced []cache.InformerSynced
	src := &bgp.Sources{}
	for _, s := range sources {
		inf := cache.NewSharedIndexInformerWithOptions(newReconnecting(s.lw, reconnectInterval), s.obj, cache.SharedIndexInformerOptions{})
		if err := inf.SetTransform(trimForCache); err != nil {
			return nil, nil, fmt.Errorf("informer for %T: %w", s.obj, err)
		}
		if _, err := inf.AddEventHandler(syncrunner.EventHandler(b.ctl.Trigger)); err != nil {
			return nil, nil, fmt.Errorf("event handler for %T: %w", s.obj, err)
		}
		synced = append(synced, inf.HasSynced)
		wg.Add(1)
		go func() {
			defer wg.Done()
			inf.RunWithContext(ctx)
		}()
		*s.to(src) = inf.GetStore()
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

// newBGPDeps returns the BGP parts of this agent: the speaker (GoBGP in
// the child process trellis-bgp beside the agent's executable, started
// while BGP is on: internal/bgp/speakerproc) and the kernel routes
// (internal/bgp/kernelroutes, route protocol 159). The agent itself never
// links GoBGP (cmd/trellis-agent/deps_test.go).
func newBGPDeps(logger klog.Logger) bgpDeps {
	return bgpDeps{
		newSpeaker: func() bgp.Speaker {
			return speakerproc.New(speakerproc.Config{Log: logger.WithName("bgp-speaker")})
		},
		kernel: &kernelroutes.Table{},
	}
}
