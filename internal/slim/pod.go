package slim

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Pod is what the agent keeps of a Pod: what the NetworkPolicy controller
// and the deny log read (identity, labels, timestamps, node, host network,
// phase, addresses, named ports).
type Pod struct {
	Meta
	NodeName    string
	HostNetwork bool
	Phase       corev1.PodPhase
	// IPs are status.podIPs (status.podIP when that list is empty),
	// parsed and unmapped; addresses that do not parse are left out.
	IPs []netip.Addr
	// Ports are the named container ports (shared with other pods: never
	// modify them): the regular containers' first,
	// then the native sidecars' (init containers with restartPolicy
	// Always), the order in which Services resolve named ports. Unnamed
	// ports are left out: a NetworkPolicy can refer to a pod's port only
	// by its name.
	Ports []Port
	// MirrorUID is, on the mirror pod of a static pod, the UID the kubelet
	// and the runtime know the pod by (annotation kubernetes.io/config.mirror).
	MirrorUID string
}

// Port is a named container port.
type Port struct {
	Name     string
	Protocol corev1.Protocol
	Port     int32
}

// MirrorAnnotation holds, on the mirror pod of a static pod, the UID the
// kubelet (and so the runtime, in K8S_POD_UID) knows the pod by.
const MirrorAnnotation = "kubernetes.io/config.mirror"

var _ runtime.Object = (*Pod)(nil)

// PodOf returns the slim copy of p, sharing strings and labels through in
// (nil: none shared). It keeps UID and MirrorUID; a caller that needs them
// only for some pods (the agent: its own node's) may clear them.
func PodOf(p *corev1.Pod, in *Interner) *Pod {
	out := &Pod{Meta: metaOf(&p.ObjectMeta, in), NodeName: in.String(p.Spec.NodeName), HostNetwork: p.Spec.HostNetwork,
		Phase: corev1.PodPhase(in.String(string(p.Status.Phase))), MirrorUID: p.Annotations[MirrorAnnotation]}
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			if out.IPs == nil {
				out.IPs = make([]netip.Addr, 0, len(ips))
			}
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	var ports []Port
	for i := range p.Spec.Containers {
		ports = appendNamed(ports, p.Spec.Containers[i].Ports)
	}
	for i := range p.Spec.InitContainers {
		if c := &p.Spec.InitContainers[i]; IsSidecar(c) {
			ports = appendNamed(ports, c.Ports)
		}
	}
	out.Ports = in.Ports(ports)
	return out
}

// IsSidecar reports whether an init container is a native sidecar
// (restartPolicy Always): it keeps running beside the regular containers,
// and its named ports count like theirs.
func IsSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

func appendNamed(out []Port, ports []corev1.ContainerPort) []Port {
	for _, cp := range ports {
		if cp.Name != "" {
			out = append(out, Port{Name: cp.Name, Protocol: cp.Protocol, Port: cp.ContainerPort})
		}
	}
	return out
}

// Finished reports whether the pod has terminated (phase Succeeded or
// Failed): its address may already belong to another pod.
func (p *Pod) Finished() bool {
	return p.Phase == corev1.PodSucceeded || p.Phase == corev1.PodFailed
}

// GetObjectKind implements runtime.Object (slim objects carry no kind).
func (p *Pod) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object. The label set stays shared
// (it is never modified).
func (p *Pod) DeepCopyObject() runtime.Object {
	cp := *p
	cp.IPs = append([]netip.Addr(nil), p.IPs...)
	cp.Ports = append([]Port(nil), p.Ports...)
	return &cp
}
