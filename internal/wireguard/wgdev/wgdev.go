// Package wgdev is the kernel half of Trellis's encryption: it creates the
// WireGuard device and configures it.
//
// Engines. With engine auto the device is the kernel module's (netlink link
// type "wireguard") when the kernel has the module, else wireguard-go
// (golang.zx2c4.com/wireguard) runs inside the agent on a TUN device; kernel
// and userspace force one of them. An existing device of the configured name
// is adopted (auto adopts either kind); one of the other engine is replaced.
//
// One control path. Everything but creating the device goes through wgctrl
// for both engines: a userspace device serves the UAPI socket
// /var/run/wireguard/<device>.sock, the fixed directory wgctrl and wg(8)
// look in (per mount namespace: two userspace devices of the same name need
// two mount namespaces). wireguard-go creates the socket with umask 077,
// so only root reaches it: whoever can connect can read the private key.
// The private key is read from the key file at every EnsureDevice, so
// rotating a key is writing a new file and calling it again. Address, MTU
// and link state go through netlink. Listen port and key are written only
// when they differ (writing a listen port makes wireguard-go rebind its
// sockets).
//
// Restart. The userspace engine's TUN device is persistent (TUNSETPERSIST):
// when the agent stops, the interface, its address and the routes through it
// stay, packets routed into it are dropped (no reader), none leave in
// plaintext; a new Manager re-attaches to the interface by name and traffic
// resumes with the next handshake. Offloads: the TUN device is opened with
// virtio-net headers (TCP segmentation offload both ways, UDP segmentation
// where the kernel has it) and the UDP socket uses UDP_SEGMENT/UDP_GRO;
// Status reports what was negotiated.
//
// Allowed IPs are changed prefix by prefix, never by replacing a peer's
// whole list (a replace empties the list first and drops the packets in
// flight to its other prefixes). Adding a prefix is wgctrl's plain
// AllowedIPs without ReplaceAllowedIPs. Removing one prefix has no wgctrl
// operation (wgtypes.PeerConfig has Remove for a whole peer only; the UAPI
// "allowed_ip=-prefix" of recent wireguard-go and the kernel's
// WGALLOWEDIP_F_REMOVE_ME of Linux 6.x are not reachable through it, and the
// latter is missing on older kernels), so SetPeers uses what every engine
// and version has: an allowed IP belongs to one peer at a time, and adding it
// to another peer moves it. Stale prefixes are moved to a throwaway
// "tombstone" peer (a fresh random key, no endpoint) that the same
// configuration call then removes with its prefixes. Other prefixes of the
// peer are never touched. A prefix that moves to another desired peer is
// simply added there.
package wgdev

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// Options configure a Manager.
type Options struct {
	// KeyFile holds the node's private key (wireguard.LoadOrCreateKey);
	// it is read at every EnsureDevice, and created when missing.
	KeyFile string
	// NetnsPath, when set, is the network namespace the devices live in
	// (tests); empty means the calling process's own. The userspace
	// engine's TUN device and UDP sockets are created in it.
	NetnsPath string
	// Logger receives the Manager's and wireguard-go's log lines (zero
	// value: discarded).
	Logger logr.Logger
}

// Manager creates and configures WireGuard devices; it implements
// wireguard.Kernel. It runs the userspace devices it creates until Close.
type Manager struct {
	opts Options
	h    *netlink.Handle

	mu sync.Mutex
	// user holds the running userspace devices by interface name.
	user map[string]*userspaceDevice
	// nodes maps each device's peer keys to node names (last SetPeers).
	nodes map[string]map[[32]byte]string
}

var _ wireguard.Kernel = (*Manager)(nil)

// New returns a Manager. It starts nothing: devices appear at EnsureDevice.
func New(opts Options) (*Manager, error) {
	if opts.KeyFile == "" {
		return nil, errors.New("wgdev: Options.KeyFile is required")
	}
	h := &netlink.Handle{}
	if opts.NetnsPath != "" {
		nsh, err := vns.GetFromPath(opts.NetnsPath)
		if err != nil {
			return nil, fmt.Errorf("wgdev: open network namespace %s: %w", opts.NetnsPath, err)
		}
		defer nsh.Close()
		if h, err = netlink.NewHandleAt(nsh); err != nil {
			return nil, fmt.Errorf("wgdev: netlink handle in %s: %w", opts.NetnsPath, err)
		}
	}
	return &Manager{
		opts:  opts,
		h:     h,
		user:  map[string]*userspaceDevice{},
		nodes: map[string]map[[32]byte]string{},
	}, nil
}

// Close stops the userspace devices this Manager runs. Their TUN interfaces
// stay (persistent), with their addresses and the routes through them; a
// new Manager re-attaches to them by name. Kernel devices are untouched.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for name := range m.user {
		errs = append(errs, m.stopUserspace(name))
	}
	if m.opts.NetnsPath != "" {
		m.h.Close()
	}
	return errors.Join(errs...)
}

// EnsureDevice creates or adopts the device and makes it match d: private
// key from the key file, listen port, address, MTU, up. It never touches
// the device's peers.
func (m *Manager) EnsureDevice(ctx context.Context, d wireguard.Device) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validateDevice(d); err != nil {
		return err
	}
	key, created, err := wireguard.LoadOrCreateKey(m.opts.KeyFile)
	if err != nil {
		return fmt.Errorf("WireGuard device %s: %w", d.Name, err)
	}
	if created {
		m.log().Info("created a WireGuard private key", "file", m.opts.KeyFile, "keyID", wireguard.KeyID(key.PublicKey()))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	engine, err := m.ensureLink(d)
	if err != nil {
		return err
	}
	if err := m.configureLink(d); err != nil {
		return err
	}
	if engine == config.EngineUserspace {
		if err := m.user[d.Name].up(); err != nil {
			return fmt.Errorf("WireGuard device %s: %w", d.Name, err)
		}
	}
	return m.configureDevice(d, key)
}

// RemoveDevice deletes the device (a userspace device is stopped first);
// absent is fine.
func (m *Manager) RemoveDevice(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.stopUserspace(name); err != nil {
		return err
	}
	delete(m.nodes, name)
	link, err := m.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up WireGuard device %s: %w", name, err)
	}
	if t := link.Type(); t != linkTypeKernel && t != linkTypeTUN {
		return fmt.Errorf("interface %s is a %s device, not a WireGuard device: not removing it", name, t)
	}
	if err := m.h.LinkDel(link); err != nil {
		return fmt.Errorf("delete WireGuard device %s: %w", name, err)
	}
	return nil
}

func validateDevice(d wireguard.Device) error {
	var errs []error
	if n := len(d.Name); n == 0 || n > 15 {
		errs = append(errs, fmt.Errorf("name %q must be 1..15 characters", d.Name))
	}
	if d.Port < 1 || d.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is outside 1..65535", d.Port))
	}
	if d.MTU < 576 || d.MTU > 65535 {
		errs = append(errs, fmt.Errorf("MTU %d is outside 576..65535", d.MTU))
	}
	if !d.Addr.IsValid() {
		errs = append(errs, errors.New("no address"))
	}
	switch d.Engine {
	case config.EngineAuto, config.EngineKernel, config.EngineUserspace:
	default:
		errs = append(errs, fmt.Errorf("engine %q is not one of auto, kernel, userspace", d.Engine))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("WireGuard device %q: %w", d.Name, err)
	}
	return nil
}

// inNS runs fn on a thread in the Manager's network namespace (directly
// when it is the process's own).
func (m *Manager) inNS(fn func() error) error {
	if m.opts.NetnsPath == "" {
		return fn()
	}
	return ns.WithNetNSPath(m.opts.NetnsPath, func(ns.NetNS) error { return fn() })
}

// client opens a wgctrl client in the Manager's namespace. A new one per
// call: wgctrl finds the kernel's WireGuard netlink family only if the
// module was loaded when it was opened, which creating the first kernel
// device may just have done.
func (m *Manager) client() (*wgctrl.Client, error) {
	var c *wgctrl.Client
	err := m.inNS(func() error {
		var err error
		c, err = wgctrl.New()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	return c, nil
}

func (m *Manager) log() logr.Logger { return m.opts.Logger.WithName("wgdev") }
