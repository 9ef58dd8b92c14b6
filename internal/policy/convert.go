package policy

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// PodFromAPI converts an API pod; iface is its host-side interface when it
// runs on this node and the agent has found it ("" otherwise).
func PodFromAPI(p *corev1.Pod, iface string) Pod {
	out := Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Labels:      p.Labels,
		NodeName:    p.Spec.NodeName,
		HostNetwork: p.Spec.HostNetwork,
		Interface:   iface,
		src:         p,
	}
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	// Named ports resolve as Services resolve them: the regular containers
	// first, then native sidecars (init containers with restartPolicy
	// Always, which run for the pod's whole life).
	for _, c := range p.Spec.Containers {
		out.Ports = appendPorts(out.Ports, c.Ports)
	}
	for i := range p.Spec.InitContainers {
		if c := &p.Spec.InitContainers[i]; IsSidecar(c) {
			out.Ports = appendPorts(out.Ports, c.Ports)
		}
	}
	return out
}

// IsSidecar reports whether an init container is a native sidecar
// (restartPolicy Always): it keeps running beside the regular containers,
// and its named ports count like theirs.
func IsSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

func appendPorts(out []ContainerPort, ports []corev1.ContainerPort) []ContainerPort {
	for _, cp := range ports {
		out = append(out, ContainerPort{Name: cp.Name, Protocol: cp.Protocol, Port: cp.ContainerPort})
	}
	return out
}

// NamespaceFromAPI converts an API namespace.
func NamespaceFromAPI(ns *corev1.Namespace) Namespace {
	return Namespace{Name: ns.Name, Labels: ns.Labels}
}
