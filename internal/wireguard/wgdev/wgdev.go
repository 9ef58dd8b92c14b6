// Package wgdev is the kernel half of Trellis's encryption: it creates the
// WireGuard device and configures it.
//
// Engines: the kernel module's device (netlink link type "wireguard") when
// the kernel has it, else wireguard-go (golang.zx2c4.com/wireguard) run
// inside the agent on a TUN device. Configuration (private key, listen port,
// peers, allowed IPs) goes through wgctrl for both: a userspace device
// serves wgctrl's UAPI socket in /var/run/wireguard, so `wg show` works on
// either. Address, MTU and link state go through netlink.
package wgdev

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// Options configure a Manager.
type Options struct {
	// KeyFile holds the node's private key (wireguard.LoadOrCreateKey);
	// it is read at every EnsureDevice.
	KeyFile string
	// NetnsPath, when set, is the network namespace the device lives in
	// (tests); empty means the agent's own.
	NetnsPath string
	// Logger receives wireguard-go's log lines (zero value: discarded).
	Logger logr.Logger
}

// Manager creates and configures WireGuard devices; it implements
// wireguard.Kernel. It runs the userspace devices it creates until Close.
type Manager struct {
	opts Options
}

var _ wireguard.Kernel = (*Manager)(nil)

// New returns a Manager.
func New(opts Options) (*Manager, error) {
	if opts.KeyFile == "" {
		return nil, errors.New("wgdev: Options.KeyFile is required")
	}
	return &Manager{opts: opts}, nil
}

// Close stops the userspace devices this Manager runs. Their TUN interfaces
// stay (persistent), with their addresses and the routes through them; a
// new Manager re-attaches to them by name. Kernel devices are untouched.
func (m *Manager) Close() error { return nil }

// EnsureDevice creates or adopts the device and makes it match d.
func (m *Manager) EnsureDevice(ctx context.Context, d wireguard.Device) error {
	return errors.New("wgdev: not implemented yet")
}

// SetPeers makes the device's peers exactly peers.
func (m *Manager) SetPeers(ctx context.Context, device string, peers []wireguard.Peer) error {
	return errors.New("wgdev: not implemented yet")
}

// RemoveDevice deletes the device; absent is fine.
func (m *Manager) RemoveDevice(ctx context.Context, name string) error {
	return errors.New("wgdev: not implemented yet")
}

// Status is what the device holds now.
type Status struct {
	// Name is the interface name.
	Name string
	// Engine is kernel or userspace (never auto).
	Engine config.WireGuardEngine
	// PublicKey is the device's public key and KeyID its short id
	// (wireguard.KeyID).
	PublicKey wgtypes.Key
	KeyID     string
	// ListenPort is the UDP port the device listens on.
	ListenPort int
	// Offloads are the offloads the userspace engine negotiated (all
	// false for the kernel engine, whose offloads are the kernel's).
	Offloads Offloads
	// Peers are the device's peers, ordered by node name then key id.
	Peers []PeerStatus
}

// Offloads are the segmentation offloads a userspace device runs with.
type Offloads struct {
	// TUNVnetHdr: the TUN device carries virtio-net headers, so the
	// kernel hands wireguard-go TCP segments up to 64 KiB
	// (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6) and takes coalesced ones back.
	TUNVnetHdr bool
	// TUNUSO: UDP segmentation offload on the TUN device (TUN_F_USO4|6).
	TUNUSO bool
	// UDPGSO and UDPGRO: the UDP socket sends with UDP_SEGMENT and
	// receives with UDP_GRO (batches of encrypted datagrams per syscall).
	UDPGSO bool
	UDPGRO bool
}

// PeerStatus is one peer as the device holds it.
type PeerStatus struct {
	// Node is the node the peer was configured for by the last SetPeers
	// of this Manager (empty when unknown, e.g. after a restart before
	// the first SetPeers).
	Node string
	// PublicKey is the peer's key and KeyID its short id.
	PublicKey wgtypes.Key
	KeyID     string
	// Endpoint is where the device sends to the peer.
	Endpoint netip.AddrPort
	// AllowedIPs are the prefixes routed to (and accepted from) the peer.
	AllowedIPs []netip.Prefix
	// LastHandshake is the time of the last completed handshake (zero:
	// none yet).
	LastHandshake time.Time
	// RxBytes and TxBytes count the bytes received from and sent to it.
	RxBytes int64
	TxBytes int64
}

// Status reports the device's state.
func (m *Manager) Status(name string) (Status, error) {
	return Status{}, errors.New("wgdev: not implemented yet")
}
