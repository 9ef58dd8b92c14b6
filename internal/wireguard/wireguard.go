// Package wireguard is the pure half of Trellis's encryption: the Node
// annotations a node publishes its public key in, the node's key file, and
// the desired WireGuard device and peers. The kernel half (creating the
// device with the kernel module or the embedded wireguard-go, and
// configuring it through wgctrl) is internal/wireguard/wgdev; the routing
// controller computes the peers with the rest of its desired state
// (internal/routing) and the strict mode's drop rule is
// internal/wireguard/strict. docs/encryption.md describes the whole.
package wireguard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	v1 "k8s.io/api/core/v1"

	"github.com/trellisnet/trellis/internal/config"
)

// Node annotations.
const (
	// AnnotationPublicKey is the node's WireGuard public key (base64), written
	// by its own agent.
	AnnotationPublicKey = "trellis.dev/wireguard-public-key"
	// AnnotationRotate asks the node's agent for a new key pair: any value
	// the agent has not handled yet (trellisctl sets a timestamp).
	AnnotationRotate = "trellis.dev/wireguard-rotate"
	// AnnotationRotated is the AnnotationRotate value the agent handled last.
	AnnotationRotated = "trellis.dev/wireguard-rotated"
)

// Overheads of WireGuard's encapsulation: outer IP + UDP (8) + WireGuard
// header (16) + authentication tag (16).
const (
	OverheadIPv4 = 60
	OverheadIPv6 = 80
)

// PublicKeyFromNode returns the public key the node published, and false
// when it published none or one that does not parse.
func PublicKeyFromNode(n *v1.Node) (wgtypes.Key, bool) {
	s, ok := n.Annotations[AnnotationPublicKey]
	if !ok || s == "" {
		return wgtypes.Key{}, false
	}
	k, err := wgtypes.ParseKey(s)
	if err != nil || k == (wgtypes.Key{}) {
		return wgtypes.Key{}, false
	}
	return k, true
}

// KeyID is a short, stable name of a public key for status and logs (the
// first 8 hex digits of its SHA-256); it reveals nothing of the private key.
func KeyID(k wgtypes.Key) string {
	sum := sha256.Sum256(k[:])
	return hex.EncodeToString(sum[:4])
}

// Device is the desired WireGuard device.
type Device struct {
	// Name of the interface (config wireguard.device).
	Name string
	// Port is the UDP listen port.
	Port int
	// MTU is the underlay MTU minus the encapsulation overhead.
	MTU int
	// Addr is the device's address: the node's first pod CIDR's network
	// address as a /32 (the same address the VXLAN device uses), so the
	// node's own traffic to remote pods has a source the peers' allowed
	// IPs hold, and replies come back through the tunnel.
	Addr netip.Prefix
	// Engine is auto, kernel or userspace.
	Engine config.WireGuardEngine
}

// Peer is one remote node as the device should know it.
type Peer struct {
	// Node is the remote Node's name.
	Node string
	// PublicKey is the key the node published.
	PublicKey wgtypes.Key
	// Endpoint is the node IP and the WireGuard port.
	Endpoint netip.AddrPort
	// AllowedIPs are the node's validated pod CIDRs (and nothing else: a
	// node can never claim another node's pods).
	AllowedIPs []netip.Prefix
}

// Kernel programs the WireGuard device; implemented by wgdev.Manager (the
// kernel module's device or an embedded wireguard-go device on TUN, both
// configured through wgctrl). The routing controller's dataplane calls it
// before it installs routes through the device.
type Kernel interface {
	// EnsureDevice creates or adopts the device and makes it match d:
	// private key from the key file, listen port, address, MTU, up.
	EnsureDevice(ctx context.Context, d Device) error
	// SetPeers makes the device's peers exactly peers, changing allowed
	// IPs prefix by prefix (never a whole-list replace, which drops packets).
	SetPeers(ctx context.Context, device string, peers []Peer) error
	// RemoveDevice deletes the device (encryption turned off); absent is fine.
	RemoveDevice(ctx context.Context, name string) error
}
