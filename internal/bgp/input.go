package bgp

import (
	"net/netip"
	"time"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/config"
)

// Input is everything Compute reads: API objects, already listed by the
// controller, and this node's facts.
type Input struct {
	// Local is this node.
	Local Node
	// Nodes are every Node of the cluster (Local included), as read from
	// the API.
	Nodes []Node
	// Config is the BGPConfiguration "default"; nil: BGP off.
	Config *v1alpha1.BGPConfiguration
	// Peers and Advertisements are every BGPPeer and BGPAdvertisement.
	Peers          []*v1alpha1.BGPPeer
	Advertisements []*v1alpha1.BGPAdvertisement
	// Services are the Services, trimmed to what advertisements read.
	Services []Service
	// Passwords are the keys of Secret trellis-bgp-passwords (nil: absent).
	Passwords map[string]string
	// Mode is the agent's routing mode (config.ModeBGP changes what is
	// originated and imported).
	Mode config.RoutingMode
	// ClusterCIDRs are the cluster's pod CIDRs (agent config); in
	// addition, every Node's pod CIDRs count as cluster addresses.
	ClusterCIDRs []netip.Prefix
}

// Node is a Node as Compute reads it.
type Node struct {
	Name       string
	Labels     map[string]string
	InternalIP netip.Addr
	PodCIDRs   []netip.Prefix
	// Created is the Node's creation time: when two nodes claim the same
	// address or overlapping pod CIDRs, the earlier keeps them (zero:
	// then by name).
	Created time.Time
}

// Service is a Service as Compute reads it.
type Service struct {
	Namespace, Name string
	Labels          map[string]string
	ClusterIPs      []netip.Addr
	ExternalIPs     []netip.Addr
	// LoadBalancerIPs from status.loadBalancer.ingress[].ip.
	LoadBalancerIPs []netip.Addr
}

// Problem is a configuration that Compute could not honour: reported as a
// node status condition, an Event and a log line.
type Problem struct {
	// Reason is a CamelCase condition reason, e.g. InvalidPeer,
	// PasswordMissing, GracefulRestartWithBFD, ASNConflict.
	Reason string
	// Object names the API object concerned ("BGPPeer/tor").
	Object  string
	Message string
}
