// Package nodesetup prepares this node for pods: it reads the own Node,
// writes the node state file and then the CNI conflist (conflist last, both
// atomic), installs the plugin binary, sets the forwarding sysctl, publishes
// what peers need as Node annotations (node IP, VTEP MAC and, with
// encryption on, the WireGuard public key, rotated on request), and sets the NetworkUnavailable
// condition to False once the routing controller has programmed routes and
// the base dataplane (policy and anti-spoofing) is in place, True while the
// base dataplane fails. The node state file's ready follows the same two,
// and its dataplane marker (with this boot's id) is what the plugin's
// dataplane gate waits for.
package nodesetup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// Condition values set on the Node.
const (
	ConditionReason  = "TrellisRouteCreated"
	ConditionMessage = "Trellis agent programmed the routes to this node's pods"
	// ConditionReasonDataplane: NetworkUnavailable=True while the base
	// dataplane fails (the message says why).
	ConditionReasonDataplane = "TrellisDataplaneFailing"
)

// DataplaneStatus tells whether the base dataplane (the policy and
// anti-spoofing tables) is in place.
type DataplaneStatus interface {
	// DataplaneReady reports whether it is in place; when it is not,
	// reason says why and failed whether programming it failed (rather
	// than not having run yet).
	DataplaneReady() (ready, failed bool, reason string)
	// DataplaneTables are the nftables tables that must exist for it.
	DataplaneTables() []podlink.NFTable
}

// RouteStatus tells whether the routing controller has programmed routes.
type RouteStatus interface {
	Ready() (bool, string)
}

// UnderlayFinder finds the interface that carries the node IP.
type UnderlayFinder interface {
	Underlay(nodeIP netip.Addr) (routing.Underlay, error)
}

// NodePatcher patches Nodes (the one method of client-go's typed
// NodeInterface the controller uses; internal/kubeclient implements it
// without linking the clientset).
type NodePatcher interface {
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte,
		opts metav1.PatchOptions, subresources ...string) (*v1.Node, error)
}

// Sysctls sets kernel parameters.
type Sysctls interface {
	Set(path, value string) error
}

// Config wires a Controller.
type Config struct {
	// Agent is the agent's configuration (node name, CNI paths, MTU, mode).
	Agent *config.Config
	// NodeAPI patches this node's Node object.
	NodeAPI NodePatcher
	// Nodes lists Nodes (this node's is read).
	Nodes  corelisters.NodeLister
	Routes RouteStatus
	// Dataplane tells whether the base dataplane is in place.
	Dataplane DataplaneStatus
	Underlay  UnderlayFinder
	Sysctls   Sysctls
	// IPv6Forwarding turns IPv6 forwarding on while this Node has an IPv6
	// pod CIDR (RecordedIPv6Forwarding in the agent; nil: such a Node's
	// syncs fail).
	IPv6Forwarding IPv6Forwarder
	// Keys is this node's WireGuard key (required with encryption on).
	Keys KeyStore
	// OnKeyRotated (nil: none) is called after the key was rotated, before
	// the new public key is published (the routing controller's Trigger,
	// so the device takes the new private key).
	OnKeyRotated func()
	// DeviceKey (nil: not waited for) returns the public key the WireGuard
	// device holds now; a rotation publishes the new key once it does.
	DeviceKey func() (wgtypes.Key, error)
	// Sync tunes the controller's runner.
	Sync syncrunner.Options
}

// Controller is the node-setup controller. Run it (the embedded Runner)
// and Trigger it on changes of this node's Node and of routing readiness.
type Controller struct {
	*syncrunner.Runner
	cfg      *config.Config
	nodes    NodePatcher
	lister   corelisters.NodeLister
	routes   RouteStatus
	dp       DataplaneStatus
	underlay UnderlayFinder
	sysctls  Sysctls
	fwd6     IPv6Forwarder
	// raised6 is what the last IPv6 forwarding change reported (logged
	// once).
	raised6  []string
	reporter Reporter
	keys     KeyStore
	// onKeyRotated is Config.OnKeyRotated; rotatedFor is the rotation
	// request last handled (its patch may have failed).
	onKeyRotated func()
	rotatedFor   string
	// deviceKey is Config.DeviceKey; keyWait bounds the wait for it.
	deviceKey func() (wgtypes.Key, error)
	keyWait   time.Duration
	// foreignLogged are the foreign CNI configs last logged.
	foreignLogged []string
	now           func() time.Time
	// bootID returns this boot's id (podlink.BootID).
	bootID func() (string, error)
}

// Reporter receives problems that keep the node NotReady (log, Event,
// metric) and their end.
type Reporter interface {
	Report(ctx context.Context, reason, msg string)
	Clear(reason string)
}

// ReasonForeignCNIConfig is the problem reported when a foreign CNI config
// sorts before every name the agent's conflist can take.
const ReasonForeignCNIConfig = "ForeignCNIConfigFirst"

// ReasonNoPodCIDR is the problem reported while the Node has no pod CIDR.
const ReasonNoPodCIDR = "NoPodCIDR"

// SetReporter makes the controller report problems to r.
func (c *Controller) SetReporter(r Reporter) { c.reporter = r }

// New returns a node-setup controller.
func New(cfg Config) (*Controller, error) {
	if cfg.Agent == nil || cfg.NodeAPI == nil || cfg.Nodes == nil || cfg.Routes == nil || cfg.Dataplane == nil || cfg.Underlay == nil || cfg.Sysctls == nil {
		return nil, errors.New("node-setup controller: Agent, NodeAPI, Nodes, Routes, Dataplane, Underlay and Sysctls are required")
	}
	if cfg.Agent.EncryptionEnabled() && cfg.Keys == nil {
		return nil, errors.New("node-setup controller: Keys is required with encryption on")
	}
	c := &Controller{cfg: cfg.Agent, nodes: cfg.NodeAPI, lister: cfg.Nodes, routes: cfg.Routes, dp: cfg.Dataplane, underlay: cfg.Underlay,
		sysctls: cfg.Sysctls, fwd6: cfg.IPv6Forwarding, keys: cfg.Keys, onKeyRotated: cfg.OnKeyRotated,
		deviceKey: cfg.DeviceKey, keyWait: deviceKeyWait, now: time.Now, bootID: podlink.BootID}
	c.Runner = syncrunner.New("nodesetup", c.Sync, cfg.Sync)
	return c, nil
}

// Sync performs one full node-setup pass.
func (c *Controller) Sync(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("nodesetup")
	node, err := c.lister.Get(c.cfg.NodeName)
	if apierrors.IsNotFound(err) {
		_ = c.writeState(nil, 0, false, "Node object "+c.cfg.NodeName+" not found")
		return fmt.Errorf("node %s not found", c.cfg.NodeName)
	}
	if err != nil {
		return fmt.Errorf("get node %s: %w", c.cfg.NodeName, err)
	}
	if err := c.sysctls.Set("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if _, err := InstallPlugin(c.cfg.CNIPluginSource, c.cfg.CNIBinDir); err != nil {
		return err
	}
	podCIDRs := routing.PodCIDRs(node)
	nodeIP := routing.UnderlayIP(node)
	if !nodeIP.IsValid() {
		_ = c.writeState(podCIDRs, 0, false, "Node has no InternalIP")
		return fmt.Errorf("node %s has no InternalIP", node.Name)
	}
	ul, err := c.underlay.Underlay(nodeIP)
	if err != nil {
		_ = c.writeState(podCIDRs, 0, false, "node IP interface not found")
		return fmt.Errorf("find node IP interface: %w", err)
	}
	mtu := routing.PodMTUFor(routing.ParamsFromConfig(c.cfg), ul)
	if err := c.publishAnnotations(ctx, node, nodeIP); err != nil {
		return err
	}
	if len(podCIDRs) == 0 {
		if c.reporter != nil {
			c.reporter.Report(ctx, ReasonNoPodCIDR, fmt.Sprintf("Node %s has no spec.podCIDRs: run kube-controller-manager with "+
				"--allocate-node-cidrs and --cluster-cidr (kubeadm: --pod-network-cidr), or set the Node's spec.podCIDRs", node.Name))
		}
		if err := c.writeState(nil, mtu, false, "no pod CIDR allocated to this Node yet (spec.podCIDRs)"); err != nil {
			return err
		}
		return fmt.Errorf("node %s has no spec.podCIDRs yet", node.Name)
	}
	if c.reporter != nil {
		c.reporter.Clear(ReasonNoPodCIDR)
	}
	if err := c.ipv6(ctx, node, podCIDRs, mtu); err != nil {
		return err
	}
	choice, err := ChooseConflist(c.cfg.CNIConfDir)
	if err != nil {
		if c.reporter != nil && errors.Is(err, ErrForeignConfigFirst) {
			c.reporter.Report(ctx, ReasonForeignCNIConfig, err.Error())
		}
		// Not ready, and no conflist of ours: never a half configuration.
		if werr := c.writeState(podCIDRs, mtu, false, "foreign CNI config sorts first"); werr != nil {
			return errors.Join(err, werr)
		}
		return err
	}
	if c.reporter != nil {
		c.reporter.Clear(ReasonForeignCNIConfig)
	}
	if len(choice.Foreign) > 0 && !reflect.DeepEqual(choice.Foreign, c.foreignLogged) {
		logger.Info("Foreign CNI configs present; left in place, Trellis's conflist sorts first and takes precedence",
			"foreign", choice.Foreign, "conflist", choice.Name)
		c.foreignLogged = choice.Foreign
	}
	ready, reason := c.routes.Ready()
	if !ready && reason == "" {
		reason = "routes not programmed yet"
	}
	if ready {
		reason = ""
	}
	dp, dpFailed, dpReason, err := c.dataplane()
	if err != nil {
		return err
	}
	if dp == nil {
		reason = strings.TrimPrefix(reason+"; "+dpReason, "; ")
		ready = false
	}
	if err := c.writeStateDP(podCIDRs, mtu, ready, reason, dp); err != nil {
		return err
	}
	conf, err := RenderConflist(ConflistParams{
		CNIVersion: c.cfg.CNIConfVersion, RequireDataplane: true,
		MTU: mtu, NodeStateFile: c.cfg.NodeStateFile, IPAMDataDir: c.cfg.IPAMDataDir,
		LogFile: c.cfg.CNILogFile, LogLevel: c.cfg.CNILogLevel,
	})
	if err != nil {
		return err
	}
	path := filepath.Join(c.cfg.CNIConfDir, choice.Name)
	wrote, err := writeIfChanged(path, conf, 0o644)
	if err != nil {
		return fmt.Errorf("write conflist: %w", err)
	}
	if wrote {
		logger.Info("Wrote CNI conflist", "path", path, "mtu", mtu)
	}
	for _, stale := range choice.Stale {
		if err := os.Remove(filepath.Join(c.cfg.CNIConfDir, stale)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove own conflist %s after renaming it: %w", stale, err)
		}
	}
	switch {
	case ready:
		if err := c.setNetworkAvailable(ctx, node); err != nil {
			return err
		}
	case dpFailed:
		if err := c.setNetworkUnavailable(ctx, node, dpReason); err != nil {
			return err
		}
	}
	return nil
}

// ipv6 makes the node ready for its IPv6 pod CIDR, when it has one: it
// refuses a configuration that cannot serve it (IPv6Unsupported: the node
// state file closes the plugin's gate, NetworkUnavailable=True, the problem
// is reported) and turns IPv6 forwarding on. A node without an IPv6 pod
// CIDR is left as it is.
func (c *Controller) ipv6(ctx context.Context, node *v1.Node, podCIDRs []netip.Prefix, mtu int) error {
	if !hasIPv6(podCIDRs) {
		if c.reporter != nil {
			c.reporter.Clear(ReasonIPv6Unsupported)
		}
		return nil
	}
	if why := c.cfg.IPv6Unsupported(); why != "" {
		msg := fmt.Sprintf("Node %s has an IPv6 pod CIDR (spec.podCIDRs %v), and %s", node.Name, podCIDRs, why)
		if c.reporter != nil {
			c.reporter.Report(ctx, ReasonIPv6Unsupported, msg)
		}
		err := errors.Join(fmt.Errorf("node %s: %s", node.Name, why),
			c.writeState(podCIDRs, mtu, false, "IPv6 pod CIDR not supported with this configuration: "+why),
			c.setNetworkCondition(ctx, node, v1.ConditionTrue, ConditionReasonIPv6Unsupported, "Trellis agent cannot serve this node's IPv6 pod CIDR: "+why))
		return err
	}
	if c.reporter != nil {
		c.reporter.Clear(ReasonIPv6Unsupported)
	}
	raised, err := enableIPv6Forwarding(c.fwd6)
	if err != nil {
		_ = c.writeState(podCIDRs, mtu, false, err.Error())
		return err
	}
	if len(raised) > 0 && !reflect.DeepEqual(raised, c.raised6) {
		klog.FromContext(ctx).WithName("nodesetup").Info("Turned IPv6 forwarding on; raised accept_ra to 2 first so the node keeps its router advertisements",
			"interfaces", raised)
		c.raised6 = raised
	}
	return nil
}

// dataplane returns the node state file's dataplane marker (this boot's id
// and the tables) while the base dataplane is in place; otherwise nil,
// whether it failed, and why.
//
// Before the policy controller's first outcome (a restarted agent), a marker
// this boot already has is kept: the previous agent's last transaction is
// still in force (the plugin still checks that its tables exist), so a
// restart does not hold up new pods. A marker from another boot never is.
func (c *Controller) dataplane() (*podlink.Dataplane, bool, string, error) {
	ready, failed, reason := c.dp.DataplaneReady()
	if failed {
		return nil, true, reason, nil
	}
	boot, err := c.bootID()
	if err != nil {
		return nil, false, "", err
	}
	if !ready {
		if cur, err := podlink.ReadNodeState(c.cfg.NodeStateFile); err == nil && cur.Dataplane != nil && cur.Dataplane.BootID == boot {
			return cur.Dataplane, false, "", nil
		}
		if reason == "" {
			reason = "policy and anti-spoofing base not in place yet"
		}
		return nil, false, reason, nil
	}
	return &podlink.Dataplane{BootID: boot, Tables: c.dp.DataplaneTables()}, false, "", nil
}

// writeState writes a node state file without a dataplane marker (the
// plugin's gate stays closed) when its content changes.
func (c *Controller) writeState(podCIDRs []netip.Prefix, mtu int, ready bool, reason string) error {
	return c.writeStateDP(podCIDRs, mtu, ready, reason, nil)
}

// writeStateDP writes the node state file when its content (other than the
// timestamp) changes.
func (c *Controller) writeStateDP(podCIDRs []netip.Prefix, mtu int, ready bool, reason string, dp *podlink.Dataplane) error {
	want := podlink.NodeState{NodeName: c.cfg.NodeName, PodCIDRs: podCIDRs, MTU: mtu, Ready: ready, Reason: reason, Dataplane: dp}
	if want.PodCIDRs == nil {
		want.PodCIDRs = []netip.Prefix{}
	}
	if cur, err := podlink.ReadNodeState(c.cfg.NodeStateFile); err == nil {
		cmp := *cur
		cmp.UpdatedAt, cmp.Version = time.Time{}, 0
		if cmp.PodCIDRs == nil {
			cmp.PodCIDRs = []netip.Prefix{}
		}
		if reflect.DeepEqual(cmp, want) {
			return nil
		}
	}
	want.UpdatedAt = c.now().UTC()
	if err := podlink.WriteNodeState(c.cfg.NodeStateFile, &want); err != nil {
		return fmt.Errorf("write node state file: %w", err)
	}
	return nil
}

// publishAnnotations sets the trellis.dev/ annotations peers read, in one
// patch.
func (c *Controller) publishAnnotations(ctx context.Context, node *v1.Node, nodeIP netip.Addr) error {
	want := map[string]string{
		routing.AnnotationNodeIP: nodeIP.String(),
	}
	if c.cfg.RoutingMode != config.ModeNative {
		want[routing.AnnotationVTEPMAC] = routing.VTEPMAC(node.Name)
	}
	patch := map[string]any{}
	for k, v := range want {
		if node.Annotations[k] != v {
			patch[k] = v
		}
	}
	if c.cfg.RoutingMode == config.ModeNative {
		if _, ok := node.Annotations[routing.AnnotationVTEPMAC]; ok {
			patch[routing.AnnotationVTEPMAC] = nil
		}
	}
	if err := c.keyAnnotations(ctx, node, patch); err != nil {
		return err
	}
	if len(patch) == 0 {
		return nil
	}
	data, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": patch}})
	if err != nil {
		return fmt.Errorf("encode annotation patch: %w", err)
	}
	if _, err := c.nodes.Patch(ctx, node.Name, types.MergePatchType, data, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("publish node annotations: %w", err)
	}
	klog.FromContext(ctx).Info("Published node annotations", "annotations", patch)
	return nil
}

// setNetworkAvailable sets NetworkUnavailable=False unless it already is.
func (c *Controller) setNetworkAvailable(ctx context.Context, node *v1.Node) error {
	return c.setNetworkCondition(ctx, node, v1.ConditionFalse, ConditionReason, ConditionMessage)
}

// setNetworkUnavailable sets NetworkUnavailable=True (the node is tainted
// network-unavailable, so nothing new is scheduled on it) while the base
// dataplane fails.
func (c *Controller) setNetworkUnavailable(ctx context.Context, node *v1.Node, why string) error {
	return c.setNetworkCondition(ctx, node, v1.ConditionTrue, ConditionReasonDataplane,
		"Trellis agent cannot put the policy and anti-spoofing base in place: "+why)
}

// setNetworkCondition sets the NetworkUnavailable condition unless it
// already has this status and reason.
func (c *Controller) setNetworkCondition(ctx context.Context, node *v1.Node, status v1.ConditionStatus, reason, msg string) error {
	for _, cond := range node.Status.Conditions {
		if cond.Type == v1.NodeNetworkUnavailable && cond.Status == status && cond.Reason == reason {
			return nil
		}
	}
	now := metav1.NewTime(c.now())
	cond := v1.NodeCondition{
		Type: v1.NodeNetworkUnavailable, Status: status,
		Reason: reason, Message: msg,
		LastTransitionTime: now, LastHeartbeatTime: now,
	}
	data, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []v1.NodeCondition{cond}}})
	if err != nil {
		return fmt.Errorf("encode condition patch: %w", err)
	}
	if _, err := c.nodes.Patch(ctx, node.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("set NetworkUnavailable=%s: %w", status, err)
	}
	klog.FromContext(ctx).Info("Set node condition NetworkUnavailable", "status", status, "reason", reason, "node", node.Name)
	return nil
}
