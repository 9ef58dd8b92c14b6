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
// ExternalIP, else the IP it published in its annotation.
func NodeIP(n *v1.Node) netip.Addr {
	for _, t := range []v1.NodeAddressType{v1.NodeInternalIP, v1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type != t {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
				return ip
			}
		}
	}
	if ip, err := netip.ParseAddr(n.Annotations[AnnotationNodeIP]); err == nil {
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
	return Peer{Name: n.Name, NodeIP: NodeIP(n), PodCIDRs: PodCIDRs(n), VTEPMAC: n.Annotations[AnnotationVTEPMAC],
		Created: n.CreationTimestamp.Time, PublicKey: key}
}
