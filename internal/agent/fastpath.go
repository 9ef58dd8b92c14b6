package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
	"github.com/trellisnet/trellis/internal/uninstall"
)

// newFastPathRunner returns the fast path's runner: with fastPath on, it
// loads the programs and keeps them attached to every pod interface and
// uplink; with it off, it detaches them. When the kernel cannot load the
// programs the agent warns (log, Event on its Node) and runs without the
// fast path: it returns a nil runner and the kernel's refusal (the third
// result). The returned func releases the
// programs' file descriptors (attached programs stay in the kernel).
//
// The Node annotation trellis.dev/fast-path: "off" turns it off on this
// node alone: each sync asks the node lister, and a change of the
// annotation triggers a sync (the returned handler, for the Node informer).
func newFastPathRunner(ctx context.Context, cfg *config.Config, k *fastpath.Kernel, pods *podlink.Watcher, routes *routing.Controller,
	nodes corelisters.NodeLister, recorder record.EventRecorder, m *metrics.Metrics,
	opts syncrunner.Options) (*syncrunner.Runner, func(), error, error) {
	logger := klog.FromContext(ctx).WithName("fastpath")
	if !cfg.FastPathEnabled() {
		ctl, err := fastpath.New(fastpath.Config{Disabled: true, Kernel: k, Sync: opts})
		if err != nil {
			return nil, nil, nil, err
		}
		return ctl.Runner, func() {}, nil, nil
	}
	progs, err := fastpath.Load()
	if err != nil {
		logger.Error(err, "The eBPF fast path is unavailable on this kernel; pod traffic takes the full host path")
		node := &v1.ObjectReference{Kind: "Node", Name: cfg.NodeName, UID: types.UID(cfg.NodeName)}
		recorder.Eventf(node, v1.EventTypeWarning, "FastPathUnavailable", "eBPF fast path not loaded: %v", err)
		return nil, func() {}, err, nil
	}
	// Loading parsed the kernel's BTF (several MiB of heap, garbage now):
	// give it back to the OS at once rather than when the scavenger gets to it.
	debug.FreeOSMemory()
	if err := m.Registry.Register(fastpath.NewCollector(progs)); err != nil {
		progs.Close()
		return nil, nil, nil, fmt.Errorf("register fast-path metrics: %w", err)
	}
	uplinks := func() []string {
		var names []string
		for _, ul := range routes.Underlays() {
			if !slices.Contains(names, ul.Device) {
				names = append(names, ul.Device)
			}
		}
		if cfg.RoutingMode != config.ModeNative && cfg.RoutingMode != config.ModeBGP {
			names = append(names, cfg.VXLAN.Device, cfg.VXLAN.Device6)
		}
		return names
	}
	// Sysctls the fast path changes are recorded so that uninstall can
	// put them back.
	sys := uninstall.Recorder{Sysctls: nodesetup.ProcSysctls{Root: cfg.SysctlRoot},
		File: uninstall.RecordPath(filepath.Dir(cfg.NodeStateFile))}
	off := func() bool {
		n, err := nodes.Get(cfg.NodeName)
		return err == nil && fastpath.OffByAnnotation(n.Annotations)
	}
	ctl, err := fastpath.New(fastpath.Config{Kernel: k, Programs: progs, Sysctls: sys, Uplinks: uplinks,
		ExemptCTMark: cfg.FastPathExemptCTMark, Encrypted: cfg.EncryptionEnabled(), Off: off, Sync: opts})
	if err != nil {
		progs.Close()
		return nil, nil, nil, err
	}
	// Pod interfaces come from the agent's one watch; a pod interface or an
	// uplink appearing triggers a sync.
	k.Pods = pods
	r := ctl.Runner
	pods.OnChange(func([]podlink.Interface) { r.Trigger() })
	pods.OnLinkChange(r.Trigger)
	return r, progs.Close, nil, nil
}

// fastPathOffHandler triggers the fast-path runner when this node's
// trellis.dev/fast-path annotation turns it off or on.
func fastPathOffHandler(self string, r *syncrunner.Runner) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if n, ok := obj.(*v1.Node); ok && n.Name == self {
				r.Trigger()
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*v1.Node)
			n, ok2 := newObj.(*v1.Node)
			if ok1 && ok2 && n.Name == self && fastpath.OffByAnnotation(o.Annotations) != fastpath.OffByAnnotation(n.Annotations) {
				r.Trigger()
			}
		},
	}
}
