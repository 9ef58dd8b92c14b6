package routing

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"

	"github.com/trellisnet/trellis/internal/wireguard"
)

// Node annotations the agent publishes for its peers.
const (
	AnnotationPrefix  = "trellis.dev/"
	AnnotationVTEPMAC = AnnotationPrefix + "vtep-mac"
	AnnotationNodeIP  = AnnotationPrefix + "node-ip"
	AnnotationVTEPIP  = AnnotationPrefix + "vtep-ip"
)

// NodeIP returns the node's first IPv4 InternalIP, else its first IPv4
// ExternalIP, else the IPv4 address it published in its annotation
// (invalid: none).
func NodeIP(n *v1.Node) netip.Addr { return nodeIPOf(n, false) }

// NodeIP6 returns the node's first IPv6 InternalIP, else its first IPv6
// ExternalIP, else the IPv6 address it published in its annotation
// (invalid: none).
func NodeIP6(n *v1.Node) netip.Addr { return nodeIPOf(n, true) }

// UnderlayIP is the node IP that carries the node's own traffic and, in
// VXLAN, its overlay: the IPv4 node IP, else (an IPv6-only node) the IPv6
// one. Its interface's MTU sizes the pods' (PodMTUFor).
func UnderlayIP(n *v1.Node) netip.Addr {
	if ip := NodeIP(n); ip.IsValid() {
		return ip
	}
	return NodeIP6(n)
}

func nodeIPOf(n *v1.Node, v6 bool) netip.Addr {
	of := func(ip netip.Addr) bool { return ip.Is4() != v6 && !ip.Is4In6() && !ip.IsLinkLocalUnicast() }
	for _, t := range []v1.NodeAddressType{v1.NodeInternalIP, v1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type != t {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && of(ip) && ip.Zone() == "" {
				return ip
			}
		}
	}
	if ip, err := netip.ParseAddr(n.Annotations[AnnotationNodeIP]); err == nil && of(ip) && ip.Zone() == "" {
		return ip
	}
	return netip.Addr{}
}

// PodCIDRs returns spec.podCIDRs (or the legacy spec.podCIDR), parsed;
// unparsable entries are dropped.
func PodCIDRs(n *v1.Node) []netip.Prefix {
	raw := n.Spec.PodCIDRs
	if len(raw) == 0 && n.Spec.PodCIDR != "" {
		raw = []string{n.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, s := range raw {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// PeerFromNode converts a Node into a Peer.
func PeerFromNode(n *v1.Node) Peer {
	key, _ := wireguard.PublicKeyFromNode(n)
	return Peer{Name: n.Name, NodeIP: NodeIP(n), NodeIP6: NodeIP6(n), PodCIDRs: PodCIDRs(n), VTEPMAC: n.Annotations[AnnotationVTEPMAC],
		Created: n.CreationTimestamp.Time, PublicKey: key}
}
