package netlinkprog

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/routing"
)

// ErrNoWireGuard is returned when the desired state holds a WireGuard
// device but the Programmer has no wireguard.Kernel to program it.
var ErrNoWireGuard = errors.New("encryption is on but this dataplane has no WireGuard support (Programmer.WireGuard is nil)")

// applyWireGuard makes the device and its peers match d.WireGuard, before
// any route through the device is installed.
func (n *session) applyWireGuard(ctx context.Context, logger klog.Logger, wg *routing.WireGuard) error {
	if n.WireGuard == nil {
		return ErrNoWireGuard
	}
	if err := n.WireGuard.EnsureDevice(ctx, wg.Device); err != nil {
		return fmt.Errorf("WireGuard device %s: %w", wg.Device.Name, err)
	}
	if err := n.WireGuard.SetPeers(ctx, wg.Device.Name, wg.Peers); err != nil {
		return fmt.Errorf("WireGuard peers of %s: %w", wg.Device.Name, err)
	}
	logger.V(2).Info("Programmed WireGuard device", "device", wg.Device.Name, "peers", len(wg.Peers))
	return nil
}

// removeWireGuard deletes the agent's WireGuard device (encryption turned
// off), through the wireguard.Kernel when there is one. Without one (an
// agent started with encryption off does not build it) the device is
// deleted with netlink, and only when it is a WireGuard or TUN device:
// another kind of link that happens to have the name is left alone.
func (n *session) removeWireGuard(ctx context.Context, logger klog.Logger, name string) error {
	if n.WireGuard != nil {
		if err := n.WireGuard.RemoveDevice(ctx, name); err != nil {
			return fmt.Errorf("remove WireGuard device %s: %w", name, err)
		}
		return nil
	}
	l, err := n.linkIfExists(name)
	if err != nil || l == nil {
		return err
	}
	if t := l.Type(); t != "wireguard" && t != "tuntap" {
		return nil
	}
	logger.Info("Deleting WireGuard device no longer needed (encryption off)", "device", name, "type", l.Type())
	if err := n.h().LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
