package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/slim"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// Informers are the controller's sources: shared informers for Pods,
// Namespaces and NetworkPolicies (the agent builds them without client-go's
// informer factory, which links every API group; see internal/kubeclient).
type Informers struct {
	Pods, Namespaces, NetworkPolicies cache.SharedIndexInformer
}

// Config wires a Controller.
type Config struct {
	// Disabled turns NetworkPolicy enforcement off: every sync writes the
	// table with anti-spoofing only (AntiSpoofOnly); only NFT, Watch,
	// Registerer, Events, NodeName, DenyLogGroup and Sync are used then.
	Disabled bool
	NodeName string
	// Informers feed the listers; New adds its event handlers to them. The
	// caller starts them and waits for their caches before Run.
	Informers Informers
	// NFT is bound to the inet family and TableName.
	NFT        knftables.Interface
	Interfaces InterfaceLister
	// Registerer receives the policy metrics (nil: not registered).
	Registerer prometheus.Registerer
	// DenyLogGroup, when not 0, sends denied packets to this nflog group
	// (see Snapshot.DenyLogGroup).
	DenyLogGroup uint16
	// Watch, when set, guards the table against changes made by others
	// (nftwatch.Watch): any transaction by another process touching the
	// table makes the next sync rewrite it completely, at once. Run
	// Controller.Watch beside the runner. Without it, every sync reads the
	// table back and trusts nothing it committed before.
	Watch TableWatch
	// Events, when set, receives a Warning Event on the Node for every
	// repair of a foreign change.
	Events record.EventRecorder
	// Sync tunes the controller's runner (MinInterval and MaxInterval
	// default to 100ms and 1m); Sync.MaxInterval is also the period of the
	// full read-back of the table (drift repair) and of the snapshot rebuilt
	// from the whole pod cache, or longer when either would take more than
	// 0.1 % of a core (backgroundShare).
	Sync syncrunner.Options
	// CounterCacheFor is how long a metrics scrape reuses the last read of
	// the kernel's policy counters (<= 0: DefaultCounterCacheFor).
	CounterCacheFor time.Duration
}

// Controller keeps the policy table in sync with the API. Run it (the
// embedded Runner) once the informers' caches have synced.
type Controller struct {
	*syncrunner.Runner
	cfg      Config
	pods     cache.Store // *slim.Pod (the agent's informer transform) or *corev1.Pod
	nss      corelisters.NamespaceLister
	policies netlisters.NetworkPolicyLister
	metrics  *controllerMetrics
	counters *packetCounters
	guard    *guard              // nil without Config.Watch
	nft      knftables.Interface // Config.NFT, its commits attributed by guard

	mu           sync.Mutex
	pendingSince time.Time // first API change not yet programmed
	lastVerify   time.Time // last sync that read back every group set
	verifyTook   time.Duration
	lastApplied  *Desired  // what the last successful sync committed (nil: read the kernel)
	ifaceKey     *string   // the addressed pod interfaces last seen by InterfacesChanged
	compiler     *Compiler // reuses the work of the previous sync (runner goroutine only)
	lastPhases   SyncPhases
	// dirtyPods are the pods changed since the last snapshot (from the pod
	// informer's events); view, the snapshot's pods kept across syncs
	// (runner goroutine only); lastFull, when the view was last rebuilt
	// from the whole cache.
	dirtyPods map[podKey]struct{}
	view      *podView
	lastFull  time.Time
	fullTook  time.Duration
}

// backgroundShare is the share of one core that the periodic safety nets
// (the full read-back of the table, the snapshot rebuilt from the whole
// cache) may take: each runs every Sync.MaxInterval, or less often when
// it costs more than this share of that interval (a table of 100,000
// addresses takes hundreds of milliseconds to read back).
const backgroundShare = 0.001

// every is how often a safety net that last took took runs.
func (c *Controller) every(took time.Duration) time.Duration {
	return max(c.cfg.Sync.MaxInterval, time.Duration(float64(took)/backgroundShare))
}

// New returns a policy controller and adds its event handlers to
// cfg.Informers.
func New(cfg Config) (*Controller, error) {
	if cfg.Disabled {
		if cfg.NFT == nil {
			return nil, errors.New("policy controller: NFT is required")
		}
		c := &Controller{cfg: cfg}
		if err := c.setUp(); err != nil {
			return nil, err
		}
		return c, nil
	}
	inf := cfg.Informers
	if cfg.NodeName == "" || inf.Pods == nil || inf.Namespaces == nil || inf.NetworkPolicies == nil ||
		cfg.NFT == nil || cfg.Interfaces == nil {
		return nil, fmt.Errorf("policy controller: NodeName, Informers (all three), NFT and Interfaces are required")
	}
	if cfg.Sync.MinInterval <= 0 {
		cfg.Sync.MinInterval = 100 * time.Millisecond
	}
	if cfg.Sync.MaxInterval <= 0 {
		cfg.Sync.MaxInterval = time.Minute
	}
	c := &Controller{
		cfg: cfg, pods: inf.Pods.GetStore(),
		nss:      corelisters.NewNamespaceLister(inf.Namespaces.GetIndexer()),
		policies: netlisters.NewNetworkPolicyLister(inf.NetworkPolicies.GetIndexer()),
		metrics:  newControllerMetrics(), counters: newPacketCounters(cfg.NFT, cfg.CounterCacheFor),
		dirtyPods: map[podKey]struct{}{},
	}
	c.compiler = NewCompiler()
	c.view = newPodView(cfg.NodeName, c.compiler)
	if err := c.setUp(); err != nil {
		return nil, err
	}
	handler := syncrunner.EventHandler(c.changed)
	for _, i := range []cache.SharedIndexInformer{inf.Namespaces, inf.NetworkPolicies} {
		if _, err := i.AddEventHandler(handler); err != nil {
			return nil, fmt.Errorf("policy controller: add event handler: %w", err)
		}
	}
	podHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podChanged,
		UpdateFunc: func(_, obj any) { c.podChanged(obj) },
		DeleteFunc: c.podChanged,
	}
	if _, err := inf.Pods.AddEventHandler(podHandler); err != nil {
		return nil, fmt.Errorf("policy controller: add event handler: %w", err)
	}
	if cfg.Registerer != nil {
		if err := c.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
		if err := cfg.Registerer.Register(c.counters); err != nil {
			return nil, fmt.Errorf("register policy packet counters: %w", err)
		}
	}
	return c, nil
}

// Counts are the figures of the last successful sync; zero when
// enforcement is disabled or before the first sync.
func (c *Controller) Counts() Counts {
	if c.metrics == nil {
		return Counts{}
	}
	return c.metrics.counts()
}

// setUp gives c its runner, guard and guarded nftables interface, and
// registers the guard's metrics.
func (c *Controller) setUp() error {
	c.Runner = syncrunner.New("policy", c.Sync, c.cfg.Sync)
	c.nft = c.cfg.NFT
	m := nftwatch.NewMetrics(metricsNamespace, "policy table")
	if c.cfg.Registerer != nil {
		if err := m.Register(c.cfg.Registerer); err != nil {
			return err
		}
	}
	if c.cfg.Watch != nil {
		c.guard = newGuard(c.cfg.Watch, m, c.Trigger)
		c.nft = guardedNFT{Interface: c.cfg.NFT, guard: c.guard}
	}
	return nil
}

// Watch follows the changes of the table made by others (Config.Watch)
// until ctx ends; run it beside the runner. Without Config.Watch it
// returns at once.
func (c *Controller) Watch(ctx context.Context) error {
	if c.guard == nil {
		return nil
	}
	return c.guard.run(ctx)
}

// changed records an API change and asks for a sync.
func (c *Controller) changed() {
	c.mu.Lock()
	if c.pendingSince.IsZero() {
		c.pendingSince = time.Now()
	}
	c.mu.Unlock()
	c.Trigger()
}

// podChanged records a pod event: the pod is read again at the next sync.
func (c *Controller) podChanged(obj any) {
	if k, ok := keyOf(obj); ok {
		c.mu.Lock()
		c.dirtyPods[k] = struct{}{}
		c.mu.Unlock()
	}
	c.changed()
}

// Sync is one full-state sync: snapshot from the listers and the kernel's
// interfaces, compile, apply in one transaction (or, Disabled, remove the
// table).
func (c *Controller) Sync(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("policy")
	if c.cfg.Disabled {
		// Small: rewritten whole every time, whatever it held before.
		_, err := c.apply(ctx, logger, AntiSpoofOnly(c.cfg.DenyLogGroup), true)
		return err
	}
	c.mu.Lock()
	since := c.pendingSince
	c.pendingSince = time.Time{}
	c.mu.Unlock()
	err := c.sync(ctx, logger)
	if err != nil {
		c.mu.Lock()
		if !since.IsZero() && (c.pendingSince.IsZero() || since.Before(c.pendingSince)) {
			c.pendingSince = since // still not programmed
		}
		c.mu.Unlock()
		return err
	}
	if !since.IsZero() {
		c.metrics.latency.Observe(time.Since(since).Seconds())
	}
	return nil
}

// SyncPhases is where the time of one sync went.
type SyncPhases struct {
	// Snapshot lists the informers' caches and the pod interfaces and
	// converts them; Compile computes the desired table; Counters reads
	// the packet counters of groups about to go; Diff reads the table back
	// (when verifying) and builds the transaction; Commit is nftables
	// running it; Observe updates the gauges.
	Snapshot, Compile, Counters, Diff, Commit, Observe time.Duration
	// Operations is the transaction's size.
	Operations int
}

func (c *Controller) sync(ctx context.Context, logger klog.Logger) error {
	var ph SyncPhases
	mark := time.Now()
	lap := func(d *time.Duration) {
		now := time.Now()
		*d, mark = now.Sub(mark), now
	}
	snap, d, err := c.compile()
	if err != nil {
		return err
	}
	ph.Snapshot, ph.Compile = snap.took, snap.compileTook
	mark = time.Now()
	// Count what the current groups saw before some of them are deleted
	// (two nft calls: only when a group goes, or nothing is known).
	if c.lastApplied == nil || groupsDeleted(c.lastApplied, d) {
		if err := c.counters.harvest(ctx); err != nil {
			logger.V(2).Info("Could not read policy counters", "err", err)
		}
	}
	lap(&ph.Counters)
	st, err := c.apply(ctx, logger, d, false)
	if err != nil {
		return err
	}
	lap(&ph.Diff)
	ph.Diff -= st.Commit
	ph.Commit, ph.Operations = st.Commit, st.Operations
	c.counters.setGroups(d)
	c.metrics.observe(snap.Snapshot, d)
	lap(&ph.Observe)
	c.mu.Lock()
	c.lastPhases = ph
	c.mu.Unlock()
	logger.V(4).Info("Policy sync phases", "snapshot", ph.Snapshot, "compile", ph.Compile, "counters", ph.Counters,
		"diff", ph.Diff, "commit", ph.Commit, "observe", ph.Observe, "operations", ph.Operations)
	return nil
}

// LastPhases is where the time of the last successful sync went.
func (c *Controller) LastPhases() SyncPhases {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastPhases
}

// apply commits d. It rewrites the table completely when asked to (always)
// or when the guard saw a change by someone else; otherwise it reads the
// table back (the first sync, after a failed one, whenever the guard is not
// watching, and once per Sync.MaxInterval or longer, see every: drift repair) or, in between,
// diffs against what the last sync committed (each read is an nft call).
func (c *Controller) apply(ctx context.Context, logger klog.Logger, d *Desired, always bool) (ApplyStats, error) {
	taintedAt, why := c.guard.take()
	rewrite := always || !taintedAt.IsZero()
	verify := rewrite || !c.guard.trusted() || time.Since(c.lastVerify) >= c.every(c.verifyTook)
	// Verifying reads the table back, but the group sets (ranges, which
	// cannot be listed) are still diffed against the last commit, after a
	// check of their element count.
	opts := ApplyOptions{Rewrite: rewrite, TrustGroupSets: !verify, Previous: c.lastApplied, ReadBack: verify}
	applyStart := time.Now()
	st, err := ApplyWith(ctx, c.nft, d, opts)
	if err != nil {
		c.lastApplied = nil
		c.guard.restore(taintedAt, why)
		return st, err
	}
	c.lastApplied = d
	if c.metrics != nil {
		c.metrics.txOps.Observe(float64(st.Operations))
	}
	if verify {
		c.lastVerify = time.Now()
		c.verifyTook = c.lastVerify.Sub(applyStart)
	}
	if !taintedAt.IsZero() && !why.Lost {
		took := time.Since(taintedAt)
		c.guard.repaired(taintedAt, why)
		logger.Info("Policy table rewritten after a change by another process", "took", took,
			"generation", why.Gen, "pid", why.PID, "process", why.Comm)
		if c.cfg.Events != nil {
			node := &corev1.ObjectReference{Kind: "Node", Name: c.cfg.NodeName, UID: types.UID(c.cfg.NodeName)}
			c.cfg.Events.Eventf(node, corev1.EventTypeWarning, "PolicyTableRepaired",
				"nftables table inet %s was changed by process %q (pid %d); rewritten completely in %v",
				TableName, why.Comm, why.PID, took.Round(time.Millisecond))
		}
	}
	logger.V(4).Info("Policy table synced", "rewrite", rewrite, "operations", st.Operations, "elementsAdded", st.ElementsAdded,
		"elementsDeleted", st.ElementsDeleted, "chainsCreated", st.ChainsCreated, "objectsDeleted", st.ObjectsDeleted)
	return st, nil
}

// guardedNFT is an nftables interface whose commits the guard attributes.
type guardedNFT struct {
	knftables.Interface
	guard *guard
}

func (g guardedNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	return g.guard.commit(ctx, func() error { return g.Interface.Run(ctx, tx) })
}

// timedSnapshot is a snapshot with how long building and compiling it took.
type timedSnapshot struct {
	*Snapshot
	took, compileTook time.Duration
}

// compile builds the snapshot and compiles it. Between complete rebuilds
// (the first sync, after a failed one, once per Sync.MaxInterval, and
// whenever the Compiler needs every pod) the snapshot holds only the pods
// whose events came since the last sync, and the local ones.
func (c *Controller) compile() (timedSnapshot, *Desired, error) {
	start := time.Now()
	ifaces, err := c.cfg.Interfaces.PodInterfaces()
	if err != nil {
		return timedSnapshot{}, nil, fmt.Errorf("list pod interfaces: %w", err)
	}
	nss, err := c.nss.List(labels.Everything())
	if err != nil {
		return timedSnapshot{}, nil, fmt.Errorf("list namespaces: %w", err)
	}
	nps, err := c.policies.List(labels.Everything())
	if err != nil {
		return timedSnapshot{}, nil, fmt.Errorf("list networkpolicies: %w", err)
	}
	c.mu.Lock()
	dirty := c.dirtyPods
	c.dirtyPods = map[podKey]struct{}{}
	c.mu.Unlock()
	full := c.lastApplied == nil || time.Since(c.lastFull) >= c.every(c.fullTook)
	for {
		snap := &Snapshot{NodeName: c.cfg.NodeName, Policies: nps, DenyLogGroup: c.cfg.DenyLogGroup}
		for _, ns := range nss {
			snap.Namespaces = append(snap.Namespaces, NamespaceFromAPI(ns))
		}
		pods, removed, err := c.view.update(c.pods, dirty, full, ifaces)
		if err != nil {
			c.view = newPodView(c.cfg.NodeName, c.compiler) // rebuilt whole at the next sync
			c.lastApplied = nil
			return timedSnapshot{}, nil, fmt.Errorf("read pods: %w", err)
		}
		snap.Pods = pods
		ts := timedSnapshot{Snapshot: snap, took: time.Since(start)}
		if full {
			mark := time.Now()
			d := c.compiler.Compile(snap)
			c.lastFull = time.Now()
			ts.compileTook = c.lastFull.Sub(mark)
			c.fullTook = c.lastFull.Sub(start)
			return ts, d, nil
		}
		snap.partial, snap.removed = true, removed
		mark := time.Now()
		if d, ok := c.compiler.compilePartial(snap); ok {
			ts.compileTook = time.Since(mark)
			return ts, d, nil
		}
		full, dirty = true, nil // the Compiler needs every pod
	}
}

// SnapshotFromAPI builds the compiler's input from API objects:
// SnapshotFromCache of the pods' slim copies.
func SnapshotFromAPI(nodeName string, pods []*corev1.Pod, nss []*corev1.Namespace, nps []*networkingv1.NetworkPolicy,
	ifaces []podlink.Interface) *Snapshot {
	sp := make([]*slim.Pod, len(pods))
	for i, p := range pods {
		sp[i] = slim.PodOf(p, nil)
	}
	return SnapshotFromCache(nodeName, sp, nss, nps, ifaces)
}

// SnapshotFromCache builds the compiler's input from the objects as the
// controller's informers hold them and the local pod interfaces: local pods
// whose status has no address yet take it from the interface naming them,
// finished pods are dropped, contested addresses resolved (dedupeByIP), and
// each local pod-network pod is matched to its host interface (localIfaces).
func SnapshotFromCache(nodeName string, pods []*slim.Pod, nss []*corev1.Namespace, nps []*networkingv1.NetworkPolicy,
	ifaces []podlink.Interface) *Snapshot {
	snap := &Snapshot{NodeName: nodeName, Policies: nps}
	for _, ns := range nss {
		snap.Namespaces = append(snap.Namespaces, NamespaceFromAPI(ns))
	}
	local := newLocalIfaces(nodeName, ifaces)
	deduped := dedupeByIP(local.withAddresses(pods))
	snap.Pods = make([]Pod, 0, len(deduped))
	for _, p := range deduped {
		sp := PodFromCache(p, "")
		if local.local(p) {
			sp.Interface = local.interfaceOf(p, sp)
		}
		snap.Pods = append(snap.Pods, sp)
	}
	return snap
}

// groupsDeleted reports whether a group of prev is not in d.
func groupsDeleted(prev, d *Desired) bool {
	for name := range prev.Groups {
		if _, ok := d.Groups[name]; !ok {
			return true
		}
	}
	return false
}

// dedupeByIP drops finished pods and resolves address reuse: when several
// pod-network pods claim one address (a deleted pod's object outliving its
// sandbox while the address is already reused), only the pod not being
// deleted and created last owns it — on every node alike, so a stale pod's
// labels never grant anything to the new pod's address. Every address of a
// pod is contested on its own (a dual-stack pod's IPv6 address may be
// reused while its IPv4 one is not), and a pod is kept only when it owns
// all of its addresses: a pod that lost one has lost its sandbox (the
// plugin releases a pod's addresses together), so none of its addresses
// speaks for it any more.
func dedupeByIP(pods []*slim.Pod) []*slim.Pod {
	best := make(map[netip.Addr]*slim.Pod, len(pods))
	out := make([]*slim.Pod, 0, len(pods))
	for _, p := range pods {
		if !claims(p) {
			if !p.Finished() { // finished: its address may already belong to a new pod
				out = append(out, p)
			}
			continue
		}
		for _, ip := range p.IPs {
			if cur, ok := best[ip]; !ok || (cur != p && newer(p, cur)) {
				best[ip] = p
			}
		}
	}
	for _, p := range pods {
		if claims(p) && ownsAll(best, p) {
			out = append(out, p)
		}
	}
	return out
}

// ownsAll reports whether owner names p at every address of p.
func ownsAll(owner map[netip.Addr]*slim.Pod, p *slim.Pod) bool {
	for _, ip := range p.IPs {
		if owner[ip] != p {
			return false
		}
	}
	return true
}

// newer reports whether a should own a contested address rather than b.
func newer(a, b *slim.Pod) bool {
	if (a.Deleted == 0) != (b.Deleted == 0) {
		return a.Deleted == 0
	}
	if a.Created != b.Created {
		return b.Created < a.Created
	}
	return a.Namespace+"/"+a.Name > b.Namespace+"/"+b.Name
}
