// Package v1alpha1 is Trellis's BGP API (group bgp.trellis.dev): the
// cluster-wide BGPConfiguration, the BGPPeers nodes session with, the
// BGPAdvertisements saying what they announce, and one BGPNodeStatus per
// node written by that node's agent. Every kind is cluster-scoped.
//
// The CRDs (deploy/helm/trellis/crds, deploy/trellis.yaml) are generated
// from these types by controller-gen (`make generate`), with the OpenAPI
// validation given by the +kubebuilder markers below.
//
// +kubebuilder:object:generate=true
// +groupName=bgp.trellis.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// InternalPeering is how the cluster's nodes peer with each other.
// +kubebuilder:validation:Enum=None;FullMesh;RouteReflector
type InternalPeering string

// Internal peering modes.
const (
	// PeeringNone: nodes peer only with the BGPPeers (the fabric).
	PeeringNone InternalPeering = "None"
	// PeeringFullMesh: every node peers with every other node (iBGP).
	PeeringFullMesh InternalPeering = "FullMesh"
	// PeeringRouteReflector: the nodes matching RouteReflectors.NodeSelector
	// reflect; every other node peers with the reflectors only.
	PeeringRouteReflector InternalPeering = "RouteReflector"
)

// ConfigurationName is the name of the one BGPConfiguration the agents read.
const ConfigurationName = "default"

// NodeASNLabel on a Node overrides BGPConfiguration.spec.asn for that node.
const NodeASNLabel = "bgp.trellis.dev/asn"

// BGPConfiguration is the cluster's BGP setup; only the object named
// "default" is read. Without it, BGP is off.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpconfig
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="the BGPConfiguration must be named default"
type BGPConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPConfigurationSpec   `json:"spec"`
	Status BGPConfigurationStatus `json:"status,omitempty"`
}

// BGPConfigurationSpec is the cluster-wide BGP setup.
//
// +kubebuilder:validation:XValidation:rule="self.internalPeering != 'RouteReflector' || has(self.routeReflectors)",message="internalPeering RouteReflector needs routeReflectors"
type BGPConfigurationSpec struct {
	// ASN is every node's autonomous system number, unless the Node
	// carries the label bgp.trellis.dev/asn.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967294
	ASN int64 `json:"asn"`
	// RouterIDFrom: the router ID is the node's InternalIP (the only
	// choice today; a BGP router ID must be unique per node).
	// +kubebuilder:validation:Enum=InternalIP
	// +kubebuilder:default=InternalIP
	// +optional
	RouterIDFrom string `json:"routerIDFrom,omitempty"`
	// ListenPort for incoming sessions on every node address; 0 = 179.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	ListenPort int32 `json:"listenPort,omitempty"`
	// InternalPeering between the cluster's nodes; default None.
	// +kubebuilder:default=None
	// +optional
	InternalPeering InternalPeering `json:"internalPeering,omitempty"`
	// RouteReflectors, for internalPeering RouteReflector.
	// +optional
	RouteReflectors *RouteReflectors `json:"routeReflectors,omitempty"`
	// GracefulRestart (RFC 4724) on every session; on by default.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`
	// Import is what the nodes accept from their peers and install.
	// +optional
	Import *ImportPolicy `json:"import,omitempty"`
}

// RouteReflectors chooses the reflecting nodes.
type RouteReflectors struct {
	// NodeSelector picks the reflectors among the Nodes.
	NodeSelector metav1.LabelSelector `json:"nodeSelector"`
	// ClusterID is the reflectors' cluster ID (an IPv4 address).
	// +kubebuilder:validation:Format=ipv4
	ClusterID string `json:"clusterID"`
}

// GracefulRestart settings.
type GracefulRestart struct {
	// Enabled: default true.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// RestartTimeSeconds the peers keep this node's routes while its agent
	// restarts; default 120.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4095
	// +optional
	RestartTimeSeconds int32 `json:"restartTimeSeconds,omitempty"`
}

// ImportPolicy is what a node installs from what its peers send.
type ImportPolicy struct {
	// Enabled: default true; false, learned routes are not installed
	// (except other nodes' pod CIDRs in routingMode bgp).
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// AcceptedPrefixes are the prefixes (with "le" lengths) routes are
	// accepted in; empty: any prefix except the forbidden ones (a node's
	// own pod CIDRs, the cluster CIDRs from outside the cluster, the
	// default route unless listed here).
	// +optional
	// +kubebuilder:validation:MaxItems=256
	AcceptedPrefixes []PrefixMatch `json:"acceptedPrefixes,omitempty"`
	// MaxPrefixes per session; the session is torn down above it; default
	// 1000.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxPrefixes int32 `json:"maxPrefixes,omitempty"`
}

// PrefixMatch matches Prefix and its subnets up to MaxLength.
type PrefixMatch struct {
	// +kubebuilder:validation:Format=cidr
	Prefix string `json:"prefix"`
	// MaxLength; 0 = the prefix's own length.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	// +optional
	MaxLength int32 `json:"maxLength,omitempty"`
}

// BGPConfigurationStatus reports whether the configuration was accepted.
type BGPConfigurationStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true

// BGPConfigurationList is a list of BGPConfigurations.
type BGPConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPConfiguration `json:"items"`
}

// BGPPeer is a session the selected nodes open: to a fabric router
// (PeerAddress + PeerASN) or to other nodes (PeerNodeSelector).
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.spec.peerASN`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec describes one kind of session.
//
// +kubebuilder:validation:XValidation:rule="has(self.peerAddress) != has(self.peerNodeSelector)",message="set exactly one of peerAddress and peerNodeSelector"
// +kubebuilder:validation:XValidation:rule="!has(self.peerAddress) || has(self.peerASN)",message="peerAddress needs peerASN"
// +kubebuilder:validation:XValidation:rule="!(has(self.multihop) && has(self.ttlSecurity))",message="multihop and ttlSecurity exclude each other"
type BGPPeerSpec struct {
	// NodeSelector picks the nodes that open this session; empty: all.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// PeerAddress of a router outside the cluster (IPv4 or IPv6). The API
	// server has no "ip" string format, so a CEL rule checks it.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="peerAddress must be an IPv4 or IPv6 address"
	// +optional
	PeerAddress string `json:"peerAddress,omitempty"`
	// PeerASN of that router.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967294
	// +optional
	PeerASN int64 `json:"peerASN,omitempty"`
	// PeerNodeSelector: peer with the matching nodes instead.
	// +optional
	PeerNodeSelector *metav1.LabelSelector `json:"peerNodeSelector,omitempty"`
	// PasswordSecretKey is the TCP-MD5 password (RFC 2385): the key of
	// that name in the Secret PasswordSecretName ("trellis-bgp-passwords")
	// in the agent's namespace, the only Secret an agent may read. Never
	// logged.
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PasswordSecretKey string `json:"passwordSecretKey,omitempty"`
	// AllowOwnAS accepts routes whose AS path holds this node's ASN up to
	// this many times: needed when every node shares one ASN and learns
	// the other nodes' pod CIDRs back from an eBGP fabric.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	AllowOwnAS int32 `json:"allowOwnAS,omitempty"`
	// Multihop is the eBGP TTL for a peer not on a connected subnet.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	// +optional
	Multihop *int32 `json:"multihop,omitempty"`
	// TTLSecurity (GTSM, RFC 5082): the peer is at most this many hops away.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=254
	// +optional
	TTLSecurity *int32 `json:"ttlSecurity,omitempty"`
	// Passive: wait for the peer to connect.
	// +optional
	Passive bool `json:"passive,omitempty"`
	// Timers; defaults: hold 90 s, keepalive 30 s, connect retry 5 s.
	// +optional
	Timers *Timers `json:"timers,omitempty"`
	// BFD on this session (GoBGP's own). With graceful restart on, a BFD
	// down flushes the peer's routes at once (see docs/bgp.md).
	// +optional
	BFD *BFD `json:"bfd,omitempty"`
	// Families; default [ipv4-unicast].
	// +optional
	// +kubebuilder:validation:MaxItems=2
	Families []Family `json:"families,omitempty"`
	// AdvertisementSelector picks the BGPAdvertisements this session
	// carries; empty: all of them.
	// +optional
	AdvertisementSelector *metav1.LabelSelector `json:"advertisementSelector,omitempty"`
}

// Family is an address family and subsequent address family.
// +kubebuilder:validation:Enum=ipv4-unicast;ipv6-unicast
type Family string

// Families.
const (
	FamilyIPv4Unicast Family = "ipv4-unicast"
	FamilyIPv6Unicast Family = "ipv6-unicast"
)

// PasswordSecretName is the one Secret (in the agent's namespace) BGP
// passwords are read from: RBAC grants the agents that Secret alone.
const PasswordSecretName = "trellis-bgp-passwords"

// Timers of a session, in seconds.
type Timers struct {
	// +kubebuilder:validation:Minimum=3
	// +kubebuilder:validation:Maximum=65535
	// +optional
	HoldTimeSeconds int32 `json:"holdTimeSeconds,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=21845
	// +optional
	KeepaliveSeconds int32 `json:"keepaliveSeconds,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	ConnectRetrySeconds int32 `json:"connectRetrySeconds,omitempty"`
}

// BFD settings (RFC 5880 asynchronous mode, single hop).
type BFD struct {
	Enabled bool `json:"enabled"`
	// MinRxMilliseconds: default 300.
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +optional
	MinRxMilliseconds int32 `json:"minRxMilliseconds,omitempty"`
	// MinTxMilliseconds: default 300.
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +optional
	MinTxMilliseconds int32 `json:"minTxMilliseconds,omitempty"`
	// Multiplier: default 3.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	// +optional
	Multiplier int32 `json:"multiplier,omitempty"`
}

// +kubebuilder:object:root=true

// BGPPeerList is a list of BGPPeers.
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

// BGPAdvertisement is what the selected nodes announce.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPAdvertisementSpec `json:"spec"`
}

// BGPAdvertisementSpec says what is announced.
type BGPAdvertisementSpec struct {
	// NodeSelector picks the announcing nodes; empty: all.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// PodCIDR: each node announces its own pod CIDRs.
	// +optional
	PodCIDR bool `json:"podCIDR,omitempty"`
	// Services: Service addresses, announced by every selected node
	// (ECMP in the fabric; kube-proxy forwards from any node).
	// +optional
	Services *ServiceAdvertisement `json:"services,omitempty"`
	// Communities attached: "ASN:value" (RFC 1997) or "ASN:x:y" (large,
	// RFC 8092).
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:Pattern=`^[0-9]+:[0-9]+(:[0-9]+)?$`
	Communities []string `json:"communities,omitempty"`
	// LocalPreference for iBGP peers (a 32-bit attribute).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	LocalPreference *int64 `json:"localPreference,omitempty"`
}

// ServiceAdvertisement picks Service addresses.
type ServiceAdvertisement struct {
	// ServiceSelector picks the Services; empty: all.
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
	// +optional
	ClusterIP bool `json:"clusterIP,omitempty"`
	// +optional
	ExternalIPs bool `json:"externalIPs,omitempty"`
	// +optional
	LoadBalancerIPs bool `json:"loadBalancerIPs,omitempty"`
}

// +kubebuilder:object:root=true

// BGPAdvertisementList is a list of BGPAdvertisements.
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}

// BGPNodeStatus is one node's BGP state, written by its agent only (named
// after the node; the admission policy confines each agent to its own).
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpstatus
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.status.asn`
// +kubebuilder:printcolumn:name="Established",type=integer,JSONPath=`.status.established`
// +kubebuilder:printcolumn:name="Peers",type=integer,JSONPath=`.status.configured`
type BGPNodeStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status NodeStatus `json:"status,omitempty"`
}

// NodeStatus is a node's speaker and sessions.
type NodeStatus struct {
	ASN        int64  `json:"asn,omitempty"`
	RouterID   string `json:"routerID,omitempty"`
	Configured int32  `json:"configured"`
	// Established sessions.
	Established int32 `json:"established"`
	// +optional
	Peers []PeerStatus `json:"peers,omitempty"`
	// ObservedAt is when the agent wrote this.
	ObservedAt metav1.Time `json:"observedAt,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// PeerStatus is one session.
type PeerStatus struct {
	// Peer is the BGPPeer's name, or "node/NAME" for an internal session.
	Peer    string `json:"peer"`
	Address string `json:"address"`
	ASN     int64  `json:"asn"`
	// State: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
	State string `json:"state"`
	// Since the state was entered.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// +optional
	Received int32 `json:"received,omitempty"`
	// +optional
	Accepted int32 `json:"accepted,omitempty"`
	// +optional
	Advertised int32 `json:"advertised,omitempty"`
	// BFD: Off, Down, Init, Up.
	// +optional
	BFD string `json:"bfd,omitempty"`
	// GracefulRestart: Off, Negotiated, PeerRestarting (its routes held
	// stale), Restarting (this agent restarted and waits for End-of-RIB).
	// +optional
	GracefulRestart string `json:"gracefulRestart,omitempty"`
	// Reason the session is not established, as a condition reason
	// (e.g. PasswordMismatch, MaxPrefixesExceeded, PeerUnreachable).
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// +kubebuilder:object:root=true

// BGPNodeStatusList is a list of BGPNodeStatuses.
type BGPNodeStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPNodeStatus `json:"items"`
}
