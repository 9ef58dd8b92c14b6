package agent

import (
	"strings"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bgpv1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/routing"
)

// trimForCache replaces each object, before it enters an informer cache,
// with a copy holding only the fields some controller of the agent reads;
// the decoded original becomes garbage at once. The agent's memory then
// grows with what it uses, not with what kubelet, kubectl or other
// controllers write (images, container specs, last-applied annotations,
// managed fields).
//
// Who reads what (keep this list and the code in step):
//   - Node (internal/routing, internal/masq, internal/nodesetup, nodeHandler,
//     internal/bgp): name, labels (BGP node selectors and the
//     bgp.trellis.dev/asn label), spec.podCIDR(s), status.addresses, the
//     trellis.dev/ annotations, the NetworkUnavailable condition.
//   - Pod (internal/policy: PodFromAPI, dedupeByIP): namespace, name, labels,
//     creation and deletion timestamps, spec.nodeName, spec.hostNetwork, the
//     ports of spec.containers and of native sidecars (spec.initContainers
//     with restartPolicy Always; named ports), status.phase, status.podIP(s).
//   - Namespace (internal/policy): name, labels.
//   - NetworkPolicy (internal/policy): namespace, name, spec.
//   - Service (internal/bgp: bgp.Service): namespace, name, labels,
//     spec.clusterIP(s), spec.externalIPs, status.loadBalancer.ingress[].ip.
//   - Secret trellis-bgp-passwords (internal/bgp): namespace, name, data.
//   - BGPConfiguration, BGPPeer, BGPAdvertisement (internal/bgp): name,
//     labels (advertisement selectors), spec.
//
// Every object keeps its UID and resourceVersion (the informers and the
// policy controller's update filter use them).
func trimForCache(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Node:
		return trimNode(o), nil
	case *v1.Pod:
		return trimPod(o), nil
	case *v1.Namespace:
		return &v1.Namespace{ObjectMeta: trimMeta(&o.ObjectMeta, o.Labels, nil)}, nil
	case *networkingv1.NetworkPolicy:
		return &networkingv1.NetworkPolicy{ObjectMeta: trimMeta(&o.ObjectMeta, o.Labels, nil), Spec: o.Spec}, nil
	case *v1.Service:
		return trimService(o), nil
	case *v1.Secret:
		return &v1.Secret{ObjectMeta: trimMeta(&o.ObjectMeta, nil, nil), Data: o.Data}, nil
	case *bgpv1alpha1.BGPConfiguration:
		return &bgpv1alpha1.BGPConfiguration{ObjectMeta: trimMeta(&o.ObjectMeta, o.Labels, nil), Spec: o.Spec}, nil
	case *bgpv1alpha1.BGPPeer:
		return &bgpv1alpha1.BGPPeer{ObjectMeta: trimMeta(&o.ObjectMeta, o.Labels, nil), Spec: o.Spec}, nil
	case *bgpv1alpha1.BGPAdvertisement:
		return &bgpv1alpha1.BGPAdvertisement{ObjectMeta: trimMeta(&o.ObjectMeta, o.Labels, nil), Spec: o.Spec}, nil
	}
	return obj, nil // tombstones and anything else pass through
}

// trimMeta keeps identity, versions, timestamps and the given labels and
// annotations.
func trimMeta(m *metav1.ObjectMeta, labels, annotations map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp,
		Labels: labels, Annotations: annotations,
	}
}

func trimNode(n *v1.Node) *v1.Node {
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
		ObjectMeta: trimMeta(&n.ObjectMeta, n.Labels, ann),
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

func trimService(s *v1.Service) *v1.Service {
	out := &v1.Service{
		ObjectMeta: trimMeta(&s.ObjectMeta, s.Labels, nil),
		Spec:       v1.ServiceSpec{ClusterIP: s.Spec.ClusterIP, ClusterIPs: s.Spec.ClusterIPs, ExternalIPs: s.Spec.ExternalIPs},
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: in.IP})
		}
	}
	return out
}

func trimPod(p *v1.Pod) *v1.Pod {
	out := &v1.Pod{
		ObjectMeta: trimMeta(&p.ObjectMeta, p.Labels, nil),
		Spec:       v1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     v1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	for i := range p.Spec.Containers {
		if c := &p.Spec.Containers[i]; len(c.Ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, v1.Container{Name: c.Name, Ports: trimPorts(c.Ports)})
		}
	}
	for i := range p.Spec.InitContainers {
		if c := &p.Spec.InitContainers[i]; len(c.Ports) > 0 && policy.IsSidecar(c) {
			out.Spec.InitContainers = append(out.Spec.InitContainers,
				v1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy, Ports: trimPorts(c.Ports)})
		}
	}
	return out
}

func trimPorts(in []v1.ContainerPort) []v1.ContainerPort {
	out := make([]v1.ContainerPort, len(in))
	for i, cp := range in {
		out[i] = v1.ContainerPort{Name: cp.Name, Protocol: cp.Protocol, ContainerPort: cp.ContainerPort}
	}
	return out
}
