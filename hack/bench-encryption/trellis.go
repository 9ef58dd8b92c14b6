package main

// The Trellis side, run in a node helper: the agent's routing code path
// with encryption on. routing.Compute turns the node and its peer (with the
// public keys the Nodes would publish) into the desired state, and
// netlinkprog.Programmer applies it with a wgdev.Manager as its WireGuard
// kernel: the device (engine from -engine), its peers and allowed IPs, the
// routes through it.

import (
	"context"
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/internal/wireguard"
	"github.com/trellisnet/trellis/internal/wireguard/wgdev"
)

type trellisSpec struct {
	Name     string         `json:"name"`
	NodeIP   netip.Addr     `json:"nodeIP"`
	PodCIDRs []netip.Prefix `json:"podCIDRs"`
	Peers    []trellisPeer  `json:"peers"`
	Engine   string         `json:"engine"`
}

type trellisPeer struct {
	Name      string         `json:"name"`
	NodeIP    netip.Addr     `json:"nodeIP"`
	PodCIDRs  []netip.Prefix `json:"podCIDRs"`
	PublicKey string         `json:"publicKey"`
}

// trellisParams are the agent's routing parameters with encryption on
// (native mode: the nodes share the wire; the config defaults otherwise).
func trellisParams(engine string) routing.Params {
	c := &config.Config{RoutingMode: config.ModeNative, Encryption: config.EncryptionWireGuard,
		WireGuard: config.WireGuard{Device: config.DefaultWireGuardDevice, Port: config.DefaultWireGuardPort,
			Engine: config.WireGuardEngine(engine), KeyFile: config.DefaultWireGuardKeyFile}}
	return routing.ParamsFromConfig(c)
}

// trellisDevice is a node's agent code path, kept running.
type trellisDevice struct {
	mgr  *wgdev.Manager
	name string
}

func startTrellis(s helperSpec) (helperDevice, error) {
	ctx := context.Background()
	t := s.Trellis
	own, err := wireguard.LoadKey(s.KeyFile)
	if err != nil {
		return nil, err
	}
	var peers []routing.Peer
	for _, p := range t.Peers {
		k, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("peer %s: %w", p.Name, err)
		}
		peers = append(peers, routing.Peer{Name: p.Name, NodeIP: p.NodeIP, PodCIDRs: p.PodCIDRs, PublicKey: k})
	}
	mgr, err := wgdev.New(wgdev.Options{KeyFile: s.KeyFile})
	if err != nil {
		return nil, err
	}
	dp := &netlinkprog.Programmer{WireGuard: mgr}
	ul, err := dp.Underlay(t.NodeIP)
	if err != nil {
		mgr.Close()
		return nil, err
	}
	local := routing.LocalNode{Name: t.Name, NodeIP: t.NodeIP, Underlay: ul, PodCIDRs: t.PodCIDRs, PublicKey: own.PublicKey()}
	d := routing.Compute(local, peers, trellisParams(t.Engine))
	if err := checkDesired(d, len(peers)); err != nil {
		mgr.Close()
		return nil, err
	}
	if err := dp.Apply(ctx, d); err != nil {
		mgr.Close()
		return nil, fmt.Errorf("apply the routing desired state: %w", err)
	}
	return &trellisDevice{mgr: mgr, name: d.WireGuard.Device.Name}, nil
}

// checkDesired makes sure every peer takes the WireGuard path.
func checkDesired(d *routing.Desired, peers int) error {
	if len(d.Problems) > 0 {
		return fmt.Errorf("routing reports problems: %+v", d.Problems)
	}
	if d.WireGuard == nil || len(d.WireGuard.Peers) != peers {
		return fmt.Errorf("routing desired state has no WireGuard device or not every peer: %+v", d.WireGuard)
	}
	if d.Peers[string(routing.PathWireGuard)] != peers {
		return fmt.Errorf("routing sends %v peers by path, want all %d through WireGuard", d.Peers, peers)
	}
	return nil
}

func (t *trellisDevice) Close() error { return t.mgr.Close() }

func (t *trellisDevice) Status() helperStatus {
	st, err := t.mgr.Status(t.name)
	if err != nil {
		return helperStatus{Error: err.Error()}
	}
	out := helperStatus{Engine: string(st.Engine) + " (wgdev, key " + st.KeyID + ")"}
	for _, p := range st.Peers {
		if !p.LastHandshake.IsZero() {
			out.Handshakes++
		}
	}
	out.Offloads = st.Offloads.String() // tun-vnet-hdr: TSO and checksum offload on the TUN device
	return out
}
