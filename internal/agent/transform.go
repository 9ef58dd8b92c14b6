package agent

import (
	"strings"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bgpv1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/slim"
)

// trimForCache replaces each object, before it enters an informer cache,
// with a copy holding only the fields some controller of the agent reads;
// the decoded original becomes garbage at once. The agent's memory then
// grows with what it uses, not with what kubelet, kubectl or other
// controllers write (images, container specs, last-applied annotations,
// managed fields). Pods, by far the most numerous, become slim.Pods
// (internal/slim), a fraction of a trimmed core/v1 Pod's size.
//
// Who reads what (keep this list and the code in step):
//   - Node (internal/routing, internal/masq, internal/nodesetup, nodeHandler,
//     internal/bgp): name, labels (BGP node selectors and the
//     bgp.trellis.dev/asn label), spec.podCIDR(s), status.addresses, the
//     trellis.dev/ annotations, the NetworkUnavailable condition.
//   - Pod as *slim.Pod (internal/policy: SnapshotFromCache, the deny log's
//     resolver): namespace, name, labels, creation and deletion timestamps,
//     spec.nodeName, spec.hostNetwork, the named ports of spec.containers
//     and of native sidecars, status.phase, status.podIP(s); UID and the
//     mirror pod annotation on this node's pods only (matched against the
//     pod interfaces' aliases).
//   - Namespace (internal/policy): name, labels.
//   - NetworkPolicy (internal/policy): namespace, name, spec.
//   - Service (internal/bgp: bgp.Service): namespace, name, labels,
//     spec.clusterIP(s), spec.externalIPs, status.loadBalancer.ingress[].ip.
//   - Secret trellis-bgp-passwords (internal/bgp): namespace, name, data.
//   - BGPConfiguration, BGPPeer, BGPAdvertisement (internal/bgp): name,
//     labels (advertisement selectors), spec.
//
// Every object keeps its resourceVersion (the informers and the
// controllers' update filter use it) and, but for pods of other nodes, its
// UID.
//
// trimForCache shares nothing between objects and keeps every pod's UID;
// the agent's informers use a transform from newTransform.
func trimForCache(obj any) (any, error) { return transform{}.apply(obj) }

// transform is the informers' transform: trimForCache's, sharing strings
// and label sets through in (nil: not shared) and keeping pod UIDs only
// on the node self ("": on every node).
type transform struct {
	in   *slim.Interner
	self string
}

func newTransform(self string) transform { return transform{in: slim.NewInterner(), self: self} }

func (t transform) apply(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Node:
		return t.trimNode(o), nil
	case *v1.Pod:
		return t.slimPod(o), nil
	case *v1.Namespace:
		return &v1.Namespace{ObjectMeta: t.trimMeta(&o.ObjectMeta, o.Labels, nil)}, nil
	case *networkingv1.NetworkPolicy:
		return &networkingv1.NetworkPolicy{ObjectMeta: t.trimMeta(&o.ObjectMeta, o.Labels, nil), Spec: o.Spec}, nil
	case *v1.Service:
		return t.trimService(o), nil
	case *v1.Secret:
		return &v1.Secret{ObjectMeta: t.trimMeta(&o.ObjectMeta, nil, nil), Data: o.Data}, nil
	case *bgpv1alpha1.BGPConfiguration:
		return &bgpv1alpha1.BGPConfiguration{ObjectMeta: t.trimMeta(&o.ObjectMeta, o.Labels, nil), Spec: o.Spec}, nil
	case *bgpv1alpha1.BGPPeer:
		return &bgpv1alpha1.BGPPeer{ObjectMeta: t.trimMeta(&o.ObjectMeta, o.Labels, nil), Spec: o.Spec}, nil
	case *bgpv1alpha1.BGPAdvertisement:
		return &bgpv1alpha1.BGPAdvertisement{ObjectMeta: t.trimMeta(&o.ObjectMeta, o.Labels, nil), Spec: o.Spec}, nil
	}
	return obj, nil // slim objects, tombstones and anything else pass through
}

// slimPod converts p; a pod of another node keeps no UID.
func (t transform) slimPod(p *v1.Pod) *slim.Pod {
	out := slim.PodOf(p, t.in)
	if t.self != "" && out.NodeName != t.self {
		out.UID, out.MirrorUID = "", ""
	}
	return out
}

// trimMeta keeps identity, versions, timestamps and the given labels and
// annotations.
func (t transform) trimMeta(m *metav1.ObjectMeta, labels, annotations map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: m.Name, Namespace: t.in.String(m.Namespace), UID: m.UID, ResourceVersion: m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp,
		Labels: t.in.Labels(labels), Annotations: annotations,
	}
}

func (t transform) trimNode(n *v1.Node) *v1.Node {
	var ann map[string]string
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, routing.AnnotationPrefix) {
			if ann == nil {
				ann = map[string]string{}
			}
			ann[k] = v
		}
	}
	out := &v1.Node{
		ObjectMeta: t.trimMeta(&n.ObjectMeta, n.Labels, ann),
		Spec:       v1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status:     v1.NodeStatus{Addresses: n.Status.Addresses},
	}
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable {
			out.Status.Conditions = []v1.NodeCondition{c}
			break
		}
	}
	return out
}

func (t transform) trimService(s *v1.Service) *v1.Service {
	out := &v1.Service{
		ObjectMeta: t.trimMeta(&s.ObjectMeta, s.Labels, nil),
		Spec:       v1.ServiceSpec{ClusterIP: s.Spec.ClusterIP, ClusterIPs: s.Spec.ClusterIPs, ExternalIPs: s.Spec.ExternalIPs},
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: in.IP})
		}
	}
	return out
}
