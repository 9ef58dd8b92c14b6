package wgdev

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// Status is what a device holds now. It never carries the private key.
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
	// Offloads are the offloads of a userspace device this Manager runs
	// (all false for the kernel engine, whose offloads are the kernel's).
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
	// Node is the node the peer was configured for by this Manager's last
	// SetPeers (empty when unknown, e.g. after a restart before the first
	// SetPeers).
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

// Status reports the device's state, read through wgctrl.
func (m *Manager) Status(name string) (Status, error) {
	c, err := m.client()
	if err != nil {
		return Status{}, err
	}
	defer c.Close()
	d, err := c.Device(name)
	if err != nil {
		return Status{}, fmt.Errorf("read WireGuard device %s: %w", name, err)
	}
	st := Status{
		Name:       name,
		Engine:     config.EngineUserspace,
		PublicKey:  d.PublicKey,
		KeyID:      wireguard.KeyID(d.PublicKey),
		ListenPort: d.ListenPort,
	}
	if d.Type == wgtypes.LinuxKernel {
		st.Engine = config.EngineKernel
	}
	m.mu.Lock()
	if u, ok := m.user[name]; ok {
		st.Offloads = u.offloads
	}
	nodes := m.nodes[name]
	m.mu.Unlock()
	for _, p := range d.Peers {
		ps := PeerStatus{
			Node:          nodes[p.PublicKey],
			PublicKey:     p.PublicKey,
			KeyID:         wireguard.KeyID(p.PublicKey),
			Endpoint:      addrPort(p.Endpoint),
			LastHandshake: p.LastHandshakeTime,
			RxBytes:       p.ReceiveBytes,
			TxBytes:       p.TransmitBytes,
		}
		for pfx := range prefixSet(p.AllowedIPs) {
			ps.AllowedIPs = append(ps.AllowedIPs, pfx)
		}
		slices.SortFunc(ps.AllowedIPs, comparePrefix)
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return strings.Compare(a.KeyID, b.KeyID)
	})
	return st, nil
}
