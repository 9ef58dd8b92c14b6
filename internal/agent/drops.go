package agent

import (
	"context"
	"net/http"
	"net/netip"
	"reflect"
	"slices"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/drops"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/slim"
)

// newDrops builds the deny-log reader (internal/drops) and returns the
// /v1/drops handler and the function running the reader. It pairs
// interfaces with pods through the pod-interface watch and addresses and
// policies through the policy controller's informers (present when
// enforcement is on; without them only the local pod is named).
func newDrops(cfg *config.Config, infs *informerSet, pods *podlink.Watcher, recorder record.EventRecorder,
	m *metrics.Metrics,
) (http.Handler, func(context.Context) error, error) {
	ring := drops.NewRing(drops.DefaultSize, drops.DefaultMaxAge, nil)
	node := &v1.ObjectReference{Kind: "Node", Name: cfg.NodeName, UID: types.UID(cfg.NodeName)}
	src, err := drops.NewSource(drops.Config{
		Node: cfg.NodeName, Group: uint16(cfg.PolicyDenyLog), Ring: ring, Registerer: m.Registry,
		Resolver: &dropResolver{ifaces: pods, pods: infs.find(&v1.Pod{}), policies: infs.find(&networkingv1.NetworkPolicy{})},
		OnUnavailable: func(reason string) {
			if reason != "" && recorder != nil {
				recorder.Event(node, v1.EventTypeWarning, "DropsUnavailable", reason)
			}
		},
	})
	if err != nil {
		return nil, nil, err
	}
	run := func(ctx context.Context) error {
		klog.FromContext(ctx).Info("Deny log", "group", cfg.PolicyDenyLog, "keeping", ring.String())
		return src.Run(ctx)
	}
	return drops.Handler(drops.Served{Ring: ring, Source: src}, nil), run, nil
}

// dropResolver names the pods of a drop from the agent's caches.
type dropResolver struct {
	ifaces   podInterfaces             // the pod-interface watch (*podlink.Watcher)
	pods     cache.SharedIndexInformer // nil without enforcement
	policies cache.SharedIndexInformer // nil without enforcement
}

var _ drops.Resolver = (*dropResolver)(nil)

// podInterfaces lists the local pod interfaces (podlink.Watcher).
type podInterfaces interface {
	PodInterfaces() ([]podlink.Interface, error)
}

func (r *dropResolver) Interface(ifindex uint32) (string, string) {
	list, err := r.ifaces.PodInterfaces()
	if err != nil {
		return "", ""
	}
	for _, i := range list {
		if uint32(i.Index) != ifindex {
			continue
		}
		if p := i.Alias.Pod(); p != "" {
			return i.Name, p
		}
		// By address otherwise: any of the interface's pod addresses,
		// of either family.
		for _, a := range i.Addrs {
			if pod := r.PodByIP(a); pod != "" {
				return i.Name, pod
			}
		}
		return i.Name, ""
	}
	return "", ""
}

func (r *dropResolver) PodByIP(a netip.Addr) string {
	if r.pods == nil {
		return ""
	}
	a = a.Unmap()
	for _, o := range r.pods.GetStore().List() {
		p, ok := o.(*slim.Pod)
		if ok && !p.HostNetwork && slices.Contains(p.IPs, a) {
			return p.Namespace + "/" + p.Name
		}
	}
	return ""
}

func (r *dropResolver) Policies(pod, direction string) []string {
	if r.pods == nil || r.policies == nil {
		return nil
	}
	o, ok, err := r.pods.GetStore().GetByKey(pod)
	if err != nil || !ok {
		return nil
	}
	sp, ok := o.(*slim.Pod)
	if !ok {
		return nil
	}
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sp.Namespace, Name: sp.Name, Labels: sp.Labels}}
	var nps []*networkingv1.NetworkPolicy
	for _, o := range r.policies.GetStore().List() {
		if np, ok := o.(*networkingv1.NetworkPolicy); ok && np.Namespace == p.Namespace {
			nps = append(nps, np)
		}
	}
	return policy.SelectingPolicies(p, nps, direction)
}

// find returns the informer added for obj's type, nil when none was.
func (s *informerSet) find(obj runtime.Object) cache.SharedIndexInformer {
	return s.byType[reflect.TypeOf(obj)]
}
