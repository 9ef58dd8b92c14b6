package policy

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/trellisnet/trellis/internal/slim"
)

// PodFromAPI converts an API pod; iface is its host-side interface when it
// runs on this node and the agent has found it ("" otherwise).
func PodFromAPI(p *corev1.Pod, iface string) Pod { return PodFromCache(slim.PodOf(p, nil), iface) }

// PodFromCache converts a pod as the agent's cache holds it (labels,
// addresses and ports are shared with it, not copied: none is ever
// modified).
// Named ports resolve as Services resolve them: the regular containers
// first, then native sidecars (slim.Pod keeps them in that order).
func PodFromCache(p *slim.Pod, iface string) Pod {
	return Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, IPs: p.IPs, NodeName: p.NodeName,
		HostNetwork: p.HostNetwork, Interface: iface, Ports: p.Ports, src: p}
}

// IsSidecar reports whether an init container is a native sidecar
// (restartPolicy Always): it keeps running beside the regular containers,
// and its named ports count like theirs.
func IsSidecar(c *corev1.Container) bool { return slim.IsSidecar(c) }

// NamespaceFromAPI converts an API namespace.
func NamespaceFromAPI(ns *corev1.Namespace) Namespace {
	return Namespace{Name: ns.Name, Labels: ns.Labels}
}
