// Package agent wires the trellis-agent together: the Kubernetes client and
// informers, one controller per concern (each built the same way, around a
// syncrunner.Runner), the event recorder and the metrics/health server.
package agent

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/conntrack"
	"github.com/trellisnet/trellis/internal/conntrack/ctnetlink"
	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/hostfw"
	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/livetrace"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// RESTConfig builds the client configuration: the kubeconfig when given,
// in-cluster otherwise, at apiServer instead of the in-cluster Service
// address when that is set.
func RESTConfig(kubeconfig, apiServer string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (pass --kubeconfig outside a pod): %w", err)
		}
		if apiServer != "" {
			c.Host = apiServer
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

// Run starts the agent and blocks until ctx is cancelled. Stopping never
// removes datapath state: routes, devices and rules stay for the next run.
// version is the binary's release, exported in trellis_build_info.
func Run(ctx context.Context, cfg *config.Config, version string) error {
	start := time.Now()
	logger := klog.FromContext(ctx).WithValues("node", cfg.NodeName)
	ctx = klog.NewContext(ctx, logger)
	rc, err := RESTConfig(cfg.Kubeconfig, cfg.APIServer)
	if err != nil {
		return err
	}
	rc.UserAgent = "trellis-agent/" + cfg.NodeName
	client, err := kubeclient.New(rc)
	if err != nil {
		return fmt.Errorf("create Kubernetes client: %w", err)
	}
	d := deps{start: start, version: version, api: api{lw: client.ListWatches(), nodes: client.Nodes(), events: client.EventSink(), scheme: client.Scheme,
		bgpLW: client.BGPListWatches(cfg.Namespace), bgp: client.BGP()},
		bgp:    newBGPDeps(klog.FromContext(ctx)),
		routes: &netlinkprog.Programmer{SysctlRoot: cfg.SysctlRoot}, sysctls: nodesetup.ProcSysctls{Root: cfg.SysctlRoot}, fastPath: &fastpath.Kernel{},
		forwarding6: recordedIPv6Forwarding(cfg), conntrack: &ctnetlink.Netlink{}}
	// With masquerade disabled the controller still runs to remove a
	// table left by an earlier configuration; without nft there is none.
	// Without the capabilities it needs, nft itself fails (EPERM): run
	// then reports the missing capability by name and stays NotReady
	// before it touches nftables, instead of the agent crash looping on
	// nft's error.
	lacksCaps := func() bool {
		missing, err := checkCaps(cfg, "/proc/self/status")
		return err != nil || len(missing) > 0
	}
	nft, err := masq.NewNFT()
	switch {
	case err == nil:
		d.nft, d.forward = nft, hostfw.Exec{}
		// IPv6 masquerade's table; a host whose nft or kernel cannot
		// have one runs without it (its nodes have no IPv6 pods either).
		if d.nft6, err = masq.NewNFTFamily(knftables.IPv6Family); err != nil {
			klog.FromContext(ctx).Error(err, "No IPv6 masquerade table on this host")
		}
	case cfg.MasqueradeEnabled() && !lacksCaps():
		return err
	}
	if d.policyNFT, err = newPolicyNFT(cfg); err != nil && !lacksCaps() {
		return err
	}
	if d.policyWatch, err = newTableWatch(unix.NFPROTO_INET, policy.TableName); err != nil && !lacksCaps() {
		return err
	}
	if d.policyWatch != nil {
		defer d.policyWatch.Close()
	}
	if d.nft != nil {
		if d.masqWatch, err = newTableWatch(unix.NFPROTO_IPV4, masq.TableName); err != nil && !lacksCaps() {
			return err
		}
		if d.masqWatch != nil {
			defer d.masqWatch.Close()
		}
		if d.nft6 != nil {
			if d.masqWatch6, err = newTableWatch(unix.NFPROTO_IPV6, masq.TableName); err != nil && !lacksCaps() {
				return err
			}
			if d.masqWatch6 != nil {
				defer d.masqWatch6.Close()
			}
		}
	}
	d.strict = openStrictKernel(cfg.EncryptionStrictEnabled())
	defer d.strict.close()
	closeWireGuard, err := d.setUpEncryption(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeWireGuard()
	return run(ctx, cfg, d)
}

// api is the agent's view of the API server: the sources of its informers,
// the Node patch (node setup), the event sink and the scheme that names
// the objects events refer to.
type api struct {
	lw     kubeclient.ListWatches
	nodes  nodesetup.NodePatcher
	events record.EventSink
	scheme *runtime.Scheme
	// bgpLW and bgp are the BGP API group's sources, discovery and status
	// writer (bgp nil: no BGP controller, tests).
	bgpLW kubeclient.BGPListWatches
	bgp   bgpAPI
}

// deps are the agent's connections to the outside world (the API server,
// netlink, sysctls, nftables), replaceable in tests.
type deps struct {
	// start is when the agent started, the origin of the informer and
	// initial sync gauges (zero: when run is called).
	start time.Time
	// version is the binary's release (trellis_build_info).
	version string
	api     api
	// routes programs the routing controller's routes, VXLAN device, FDB
	// and neighbours (and, encryption on, the WireGuard device through
	// its WireGuard field).
	routes *netlinkprog.Programmer
	// wireGuard reads the WireGuard device's state for /v1/status (nil:
	// encryption off).
	wireGuard wireGuardStatus
	sysctls   nodesetup.Sysctls
	// forwarding6 turns IPv6 forwarding on (node setup, on a node with an
	// IPv6 pod CIDR); nil fails such a node's node setup (tests).
	forwarding6 nodesetup.IPv6Forwarder
	// fastPath programs the eBPF fast path; nil leaves it alone (tests).
	fastPath *fastpath.Kernel
	// nft is the masquerade table's interface; nil disables the controller.
	nft knftables.Interface
	// nft6 is the IPv6 masquerade table's; nil leaves IPv6 alone.
	nft6 knftables.Interface
	// forward edits iptables' FORWARD chain when its policy is DROP
	// (internal/hostfw); nil leaves it alone (tests).
	forward hostfw.NFT
	// policyNFT is the NetworkPolicy table's interface; nil disables the
	// policy controller.
	policyNFT knftables.Interface
	// conntrack deletes the conntrack entries of pod addresses that go
	// away; nil disables that controller (tests).
	conntrack conntrack.Kernel
	// policyWatch reports changes of the policy table made by others; nil
	// leaves the controller reading the table back at every sync (tests).
	policyWatch *nftwatch.Watch
	// masqWatch does the same for the masquerade table; nil leaves its
	// repair to the periodic sync.
	masqWatch *nftwatch.Watch
	// masqWatch6 is masqWatch for the IPv6 masquerade table.
	masqWatch6 *nftwatch.Watch
	// strict is encryption's strict table (encryption_strict.go).
	strict strictKernel
	// procStatus is the /proc status file capabilities are read from
	// (empty: /proc/self/status).
	procStatus string
	// bgp is the BGP speaker and kernel routes (bgp.go).
	bgp bgpDeps
}

func run(ctx context.Context, cfg *config.Config, d deps) error {
	logger := klog.FromContext(ctx)
	m := metrics.New(metrics.Build{Version: d.version, Start: d.start})
	m.SetFeature(metrics.FeatureVXLAN, cfg.RoutingMode != config.ModeNative && cfg.RoutingMode != config.ModeBGP)
	m.SetFeature(metrics.FeatureMasquerade, d.nft != nil && cfg.MasqueradeEnabled())
	m.SetFeature(metrics.FeatureNetworkPolicy, d.policyNFT != nil && cfg.NetworkPolicyEnabled())
	m.SetFeature(metrics.FeatureEncryption, cfg.EncryptionEnabled())
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(d.api.events)
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(d.api.scheme, v1.EventSource{Component: "trellis-agent", Host: cfg.NodeName})

	probs, err := newProblems(m.Registry, recorder, cfg.NodeName)
	if err != nil {
		return err
	}
	if d.procStatus == "" {
		d.procStatus = "/proc/self/status"
	}
	if missing, err := checkCaps(cfg, d.procStatus); err != nil || len(missing) > 0 {
		msg := fmt.Sprintf("the agent lacks %s; add it to the container's securityContext.capabilities.add (docs/install.md#capabilities)", strings.Join(missing, ", "))
		if err != nil {
			msg = err.Error()
		}
		probs.Report(ctx, "MissingCapability", msg)
		if err := withdrawDataplane(cfg.NodeStateFile, "the agent cannot run: "+msg); err != nil {
			logger.Error(err, "Cannot withdraw the dataplane marker; the plugin may wire pods this agent does not maintain")
		}
		return blockNotReady(ctx, cfg, m, probs)
	}

	infs := informerSet{transform: newTransform(cfg.NodeName).apply}
	nodeInf, err := infs.add(d.api.lw.Nodes, &v1.Node{})
	if err != nil {
		return err
	}
	nodeLister := corelisters.NewNodeLister(nodeInf.GetIndexer())
	runnerOpts := syncrunner.Options{MinInterval: cfg.MinSyncInterval.Duration, MaxInterval: cfg.MaxSyncInterval.Duration, Observer: m}

	var setupCtl *nodesetup.Controller
	routeCtl, err := routing.New(routing.Config{NodeName: cfg.NodeName,
		Params: routing.ParamsFromConfig(cfg),
		Nodes:  nodeLister, Kernel: d.routes, Recorder: recorder, Registerer: m.Registry, Sync: runnerOpts,
		OnReadyChange: func() { setupCtl.Trigger() }})
	if err != nil {
		return err
	}
	// The base dataplane's status follows the policy controller's syncs.
	dpStatus := newDataplaneStatus(d.policyNFT != nil, runnerOpts.Observer)
	setupCtl, err = nodesetup.New(nodesetup.Config{Agent: cfg, NodeAPI: d.api.nodes, Nodes: nodeLister,
		Routes: routeCtl, Dataplane: dpStatus, Underlay: d.routes, Sysctls: d.sysctls, IPv6Forwarding: d.forwarding6, Sync: runnerOpts,
		Keys: keyStore(ctx, cfg), OnKeyRotated: routeCtl.Trigger, DeviceKey: deviceKey(cfg, d.wireGuard)})
	if err != nil {
		return err
	}
	dpStatus.onChange(setupCtl.Trigger)
	setupCtl.SetReporter(probs)
	status := &statusSource{cfg: cfg, version: d.version, routes: routeCtl, probs: probs, nodes: nodeLister, wireGuard: d.wireGuard}
	runners := []*syncrunner.Runner{routeCtl.Runner, setupCtl.Runner}
	var policyWatch, masqWatch func(context.Context) error
	// podRunner (the policy controller's) reads pods, namespaces and
	// NetworkPolicies; every other runner reads only Nodes from the API.
	var podRunner *syncrunner.Runner
	var masqRunner *syncrunner.Runner
	if d.nft != nil {
		mc := masq.Config{NodeName: cfg.NodeName, Disabled: !cfg.MasqueradeEnabled(),
			ClusterCIDRs: cfg.ClusterCIDRs, NonMasqueradeCIDRs: cfg.NonMasqueradeCIDRs,
			Nodes: nodeLister, NFT: d.nft, Sync: runnerOpts, Registerer: m.Registry}
		if d.masqWatch != nil {
			mc.Watch = d.masqWatch
		}
		if d.nft6 != nil {
			mc.NFT6, mc.DisabledIPv6 = d.nft6, !cfg.MasqueradeIPv6Enabled()
			if d.masqWatch6 != nil {
				mc.Watch6 = d.masqWatch6
			}
		}
		masqCtl, err := masq.New(mc)
		if err != nil {
			return err
		}
		masqRunner, masqWatch = masqCtl.Runner, masqCtl.Watch
		runners = append(runners, masqRunner)
	}

	strictEnc, err := newStrictEncryption(cfg, d.strict, nodeInf, nodeLister, dpStatus, m.Registry, runnerOpts)
	if err != nil {
		return err
	}
	runners = append(runners, strictEnc.runners...)
	if d.forward != nil {
		runners = append(runners, newHostFWRunner(cfg, d.forward, nodeLister, recorder, runnerOpts))
	}
	// BGP (internal/bgp): its informers start once the BGP API is served.
	bgpCtl, bgpInfs, err := newBGP(cfg, d, nodeLister, recorder, m, runnerOpts)
	if err != nil {
		return err
	}
	var bgpWatch, bgpServed func(context.Context) error
	if bgpCtl != nil {
		status.bgp = bgpCtl
		runners = append(runners, bgpCtl.Runner)
		bgpWatch = bgpCtl.Watch
		bgpServed = func(ctx context.Context) error { bgpInfs.run(ctx); return nil }
		if _, err := nodeInf.AddEventHandler(bgpNodeHandler(bgpCtl.Trigger)); err != nil {
			return fmt.Errorf("add node event handler: %w", err)
		}
	}
	if _, err := nodeInf.AddEventHandler(nodeHandler(cfg.NodeName, routeCtl.Runner, setupCtl.Runner, masqRunner)); err != nil {
		return fmt.Errorf("add node event handler: %w", err)
	}
	// One watch of the local pod interfaces (internal/podlink) feeds the
	// policy, conntrack and fast-path controllers.
	pods := podlink.NewWatcher(podlink.WatchOptions{Resync: cfg.MaxSyncInterval.Duration})
	// The NetworkPolicy controller (internal/policy) adds pod, namespace
	// and networkpolicy informers when enforcement is enabled.
	if d.policyNFT != nil {
		policyOpts := runnerOpts
		policyOpts.Observer = dpStatus
		pc, err := newPolicyController(cfg, d.api.lw, &infs, policyKernel{d.policyNFT, d.policyWatch}, pods, recorder, m, policyOpts)
		if err != nil {
			return err
		}
		runners = append(runners, pc.Runner)
		podRunner = pc.Runner
		policyWatch = pc.Watch // started with the runners
		status.policy = pc
	}
	if d.conntrack != nil {
		// A released or moved pod address loses its conntrack entries.
		ctl, err := conntrack.New(conntrack.Config{Kernel: d.conntrack, Registerer: m.Registry, Sync: runnerOpts})
		if err != nil {
			return err
		}
		pods.OnChange(ctl.InterfacesChanged)
		runners = append(runners, ctl.Runner)
	}
	if d.fastPath != nil {
		r, release, unavailable, err := newFastPathRunner(ctx, cfg, d.fastPath, pods, routeCtl, nodeLister, recorder, m, runnerOpts)
		if err != nil {
			return err
		}
		defer release()
		status.fastPath, status.fastPathErr = r, unavailable
		if r != nil {
			runners = append(runners, r)
			if _, err := nodeInf.AddEventHandler(fastPathOffHandler(cfg.NodeName, r)); err != nil {
				return fmt.Errorf("add node event handler: %w", err)
			}
		}
		// Enabled and loaded (a nil runner: the kernel refused the programs).
		m.SetFeature(metrics.FeatureFastPath, cfg.FastPathEnabled() && r != nil)
	}

	// The deny-log reader (internal/drops) behind /v1/drops.
	dropsAPI, runDrops, err := newDrops(cfg, &infs, pods, recorder, m)
	if err != nil {
		return err
	}

	// The health server runs while the caches sync: an agent waiting for
	// an API server that is away changes nothing (the node's kernel state
	// stays and keeps working) and is alive, only not ready. A failing
	// /healthz would have the kubelet kill it in a loop, and back off its
	// restarts for minutes after the API server is back.
	var wg sync.WaitGroup
	errCh := make(chan error, 1)
	waitCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	status.runners, status.ready = runners, append(readyChecks(routeCtl, setupCtl.Runner),
		metrics.Check{Name: "informers", Fn: func() error { return informersSynced(nodeInf) }},
		metrics.Check{Name: "problems", Fn: probs.Check},
		metrics.Check{Name: "policy", Fn: dpStatus.check})
	if cfg.MetricsBindAddress != "" {
		h := m.Handler(
			[]metrics.Check{
				{Name: "routing", Fn: staleCheck(routeCtl.Runner, 3*cfg.MaxSyncInterval.Duration, time.Now)},
			},
			status.ready,
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := metrics.Serve(ctx, cfg.MetricsBindAddress, h); err != nil {
				select {
				case errCh <- err:
				default:
				}
				stopWaiting()
			}
		}()
	}

	// The local control API (internal/agentapi) that trellisctl reaches
	// through `kubectl exec`; a socket it cannot serve only costs the CLI.
	api := http.NewServeMux()
	api.Handle("/v1/version", agentapi.VersionHandler(d.version, cfg.NodeName))
	api.Handle(agentapi.StatusPath, status.handler())
	api.Handle("/v1/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	api.Handle(agentapi.TracePath, livetrace.Handler(livetrace.Config{NodeName: cfg.NodeName, Interfaces: pods, List: livetrace.ListIf(d.policyNFT != nil)}))
	api.Handle(agentapi.DropsPath, dropsAPI)
	agentapi.RegisterPprof(api)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := agentapi.Serve(ctx, agentapi.SocketPath(cfg.NodeStateFile), api); err != nil {
			logger.Error(err, "Cannot serve the local agent API; trellisctl cannot reach this agent")
		}
	}()
	go func() {
		defer wg.Done()
		_ = runDrops(ctx) // reports its own failures (drops unavailable, with the reason)
	}()

	informerCtx, stopInformers := context.WithCancel(ctx)
	defer infs.wait()
	defer stopInformers()
	infs.start(informerCtx)
	// The controllers that read only Nodes start once the Nodes are
	// cached: a restarted agent programs its routes while the (much longer)
	// lists of pods and the rest are still coming in. The policy controller
	// starts when every cache has synced.
	waitFailed := func(err error) error {
		select {
		case serveErr := <-errCh:
			return serveErr
		default:
		}
		wg.Wait()
		return err
	}
	logger.Info("Waiting for the node cache to sync")
	if err := waitForSync(waitCtx, nodeInf); err != nil {
		return waitFailed(err)
	}
	logger.Info("Node cache synced; starting the controllers that read Nodes only", "routingMode", cfg.RoutingMode)
	if d.policyNFT != nil || d.fastPath != nil || d.conntrack != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pods.Run(ctx); err != nil {
				logger.Error(err, "Cannot watch pod interfaces; controllers list them at each sync")
			}
		}()
	}
	for _, w := range []struct {
		run      func(context.Context) error
		whenLost string
	}{
		{policyWatch, "Cannot watch the policy table; every policy sync now reads it back"},
		{masqWatch, "Cannot watch the masquerade table; only the periodic sync repairs it"},
		{strictEnc.watch, "Cannot watch the strict encryption table; only the periodic sync repairs it"},
		{bgpWatch, "Cannot watch the BGP speaker; only the periodic sync follows its sessions"},
		{bgpServed, "Cannot follow whether the BGP API is served"},
	} {
		if w.run == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.run(ctx); err != nil {
				logger.Error(err, w.whenLost)
			}
		}()
	}
	startRunner := func(r *syncrunner.Runner) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Run(ctx)
		}()
	}
	for _, r := range runners {
		if r != podRunner {
			startRunner(r)
		}
	}
	logger.Info("Waiting for the other informer caches to sync")
	if err := infs.waitForSync(waitCtx); err != nil {
		return waitFailed(err)
	}
	m.InformersSynced()
	logger.Info("Informer caches synced; starting the policy controller")
	if podRunner != nil {
		startRunner(podRunner)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		releaseAfterFirstSyncs(ctx, runners, firstSyncsPoll)
	}()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errCh:
	}
	logger.Info("Stopping; datapath state is left in place")
	if runErr != nil {
		return runErr
	}
	wg.Wait()
	return nil
}
