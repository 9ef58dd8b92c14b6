package agentapi

import "time"

// StatusPath is the agent API path answering Status.
const StatusPath = "/v1/status"

// Status is the answer of /v1/status: what one node's agent knows about
// itself, read from its controllers (nothing is recomputed to answer).
type Status struct {
	Version string `json:"version"`
	Node    string `json:"node"`
	// Time is the agent's clock when it answered; ages are measured
	// against it, so the client's clock does not matter.
	Time time.Time `json:"time"`
	// RoutingMode is the configured mode (native, vxlan, auto); each
	// peer's effective path is in Routing.Peers.
	RoutingMode string `json:"routingMode"`
	// MTU is the pod MTU the agent computed (the node state file's), 0
	// before the first node setup.
	MTU int `json:"mtu"`
	// Ready is the agent's readiness (its /readyz); NotReady names every
	// failing check.
	Ready    bool     `json:"ready"`
	NotReady []string `json:"notReady,omitempty"`
	// MaxSyncInterval is the controllers' periodic resync: a controller
	// without a successful sync for 3 of them is stale.
	MaxSyncInterval Duration `json:"maxSyncInterval"`
	// Controllers are the agent's sync loops, by name.
	Controllers []Controller `json:"controllers"`
	Routing     Routing      `json:"routing"`
	Policy      Policy       `json:"policy"`
	FastPath    FastPath     `json:"fastPath"`
	Encryption  Encryption   `json:"encryption"`
	// BGP is the BGP speaker's summary (nil: no BGP controller in this
	// agent).
	BGP *BGP `json:"bgp,omitempty"`
	// Problems are the conditions keeping the node NotReady (reason:
	// message), as reported in the Node's Events.
	Problems  map[string]string `json:"problems,omitempty"`
	Dataplane Dataplane         `json:"dataplane"`
}

// Duration is a time.Duration written as a Go duration string ("1m0s").
type Duration struct{ time.Duration }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	d.Duration = v
	return err
}

// Controller is one sync loop's record (internal/syncrunner).
type Controller struct {
	Name string `json:"name"`
	// LastSuccess is when its last successful sync finished (nil: none yet).
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
	// LastError is the last sync's error ("" after a success).
	LastError string `json:"lastError,omitempty"`
	// Syncs counts its finished syncs.
	Syncs uint64 `json:"syncs"`
}

// Routing is what the routing controller's last successful sync programmed.
type Routing struct {
	// Routes to remote pod subnets (native, VXLAN and WireGuard).
	Routes int `json:"routes"`
	// Peers are the remote nodes, by name.
	Peers []Peer `json:"peers,omitempty"`
}

// Peer states.
const (
	PeerProgrammed = "programmed"
	// PeerNotProgrammed peers carry the reason in Peer.Reason.
	PeerNotProgrammed = "not-programmed"
)

// Peer is one remote node as the routing controller sees it.
type Peer struct {
	Node string `json:"node"`
	// Mode is the path traffic to it takes: native, vxlan or wireguard
	// ("" when not programmed).
	Mode    string `json:"mode,omitempty"`
	State   string `json:"state"`
	Routes  int    `json:"routes"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Policy holds the NetworkPolicy controller's figures of its last
// successful sync.
type Policy struct {
	// Enforced is false when networkPolicy is disabled (the table then
	// holds anti-spoofing only).
	Enforced        bool `json:"enforced"`
	Policies        int  `json:"policies"`
	IsolatedIngress int  `json:"isolatedIngress"`
	IsolatedEgress  int  `json:"isolatedEgress"`
	GroupsIngress   int  `json:"groupsIngress"`
	GroupsEgress    int  `json:"groupsEgress"`
}

// Fast-path states.
const (
	FastPathDisabled = "disabled"    // fastPath: false in the configuration
	FastPathOff      = "off"         // turned off on this node by its Node annotation
	FastPathNotLoad  = "unavailable" // the kernel refused the programs
	FastPathFailing  = "failing"     // loaded, its last sync failed
	FastPathActive   = "active"      // loaded and attached
	FastPathPending  = "not-synced"  // loaded, no sync yet
)

// FastPath is the eBPF fast path's state.
type FastPath struct {
	Enabled bool   `json:"enabled"`
	Loaded  bool   `json:"loaded"`
	State   string `json:"state"`
	Reason  string `json:"reason,omitempty"`
}

// Dataplane is the node state file's marker that the plugin gates on.
type Dataplane struct {
	// Ready and Reason are the node state's (routes programmed).
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	// Marker is true while the base-dataplane marker is present.
	Marker bool   `json:"marker"`
	BootID string `json:"bootID,omitempty"`
	// Error is set when the node state file could not be read.
	Error string `json:"error,omitempty"`
}

// Encryption is the state of pod traffic encryption between nodes: the
// configuration and, when it is on, what the WireGuard device holds now.
// It never carries a private key.
type Encryption struct {
	// Mode is the configured encryption: none or wireguard.
	Mode string `json:"mode"`
	// Strict is true when strict mode is on (encryptionStrict).
	Strict bool `json:"strict"`
	// Device is the WireGuard interface's name (encryption on).
	Device string `json:"device,omitempty"`
	// Engine is the engine in use: kernel or userspace ("" before the
	// device exists).
	Engine string `json:"engine,omitempty"`
	// KeyID is the short id of this node's public key (wireguard.KeyID).
	KeyID      string `json:"keyID,omitempty"`
	ListenPort int    `json:"listenPort,omitempty"`
	// Offloads names the segmentation offloads a userspace device runs
	// with (tun-vnet-hdr, tun-uso, udp-gso, udp-gro).
	Offloads []string `json:"offloads,omitempty"`
	// Peers are the device's peers, by node; PeersWithHandshake counts
	// those with a completed handshake.
	Peers              []EncryptionPeer `json:"peers,omitempty"`
	PeersWithHandshake int              `json:"peersWithHandshake"`
	// Error is set when the device could not be read.
	Error string `json:"error,omitempty"`
}

// EncryptionPeer is one WireGuard peer as the device holds it.
type EncryptionPeer struct {
	Node     string `json:"node,omitempty"`
	KeyID    string `json:"keyID"`
	Endpoint string `json:"endpoint,omitempty"`
	// AllowedIPs are the prefixes routed to (and accepted from) the peer.
	AllowedIPs []string `json:"allowedIPs,omitempty"`
	// LastHandshake is the last completed handshake (nil: none yet).
	LastHandshake *time.Time `json:"lastHandshake,omitempty"`
	RxBytes       int64      `json:"rxBytes"`
	TxBytes       int64      `json:"txBytes"`
}

// BGP summarises the node's BGP speaker (the BGPNodeStatus has the
// sessions).
type BGP struct {
	// Enabled: the speaker runs; else Reason says why not.
	Enabled bool   `json:"enabled"`
	Reason  string `json:"reason,omitempty"`
	// Established of Configured sessions.
	Established int `json:"established"`
	Configured  int `json:"configured"`
}
