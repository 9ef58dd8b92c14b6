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
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			out.Ports = append(out.Ports, ContainerPort{Name: cp.Name, Protocol: cp.Protocol, Port: cp.ContainerPort})
		}
	}
	return out
}

// NamespaceFromAPI converts an API namespace.
func NamespaceFromAPI(ns *corev1.Namespace) Namespace {
	return Namespace{Name: ns.Name, Labels: ns.Labels}
}
