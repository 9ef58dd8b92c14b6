package wgdev

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// userspaceDevice is a wireguard-go device this Manager runs: the TUN
// device, the engine and its UAPI listener.
type userspaceDevice struct {
	name     string
	tun      tun.Device
	dev      *device.Device
	offloads Offloads

	uapi     net.Listener
	uapiDone chan struct{}

	// greeted are the peers this engine has started a handshake with
	// (Manager.greet); guarded by the Manager's mutex.
	greeted map[wgtypes.Key]bool
}

// startUserspace opens (creating or re-attaching to) the persistent TUN
// device name in the Manager's namespace, starts wireguard-go on it and
// serves its UAPI socket.
func (m *Manager) startUserspace(name string, mtu int) (*userspaceDevice, error) {
	var (
		td  tun.Device
		off Offloads
	)
	err := m.inNS(func() error {
		var err error
		if td, err = tun.CreateTUN(name, mtu); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("open TUN device: %w (another process is attached to it)", err)
			}
			return fmt.Errorf("open TUN device: %w", err)
		}
		if err := tunControl(td, func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1) }); err != nil {
			_ = td.Close()
			return fmt.Errorf("make TUN device persistent: %w", err)
		}
		off = probeOffloads(td)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var bind conn.Bind = conn.NewStdNetBind()
	if m.opts.NetnsPath != "" {
		bind = &nsBind{Bind: bind, m: m}
	}
	u := &userspaceDevice{name: name, tun: td, offloads: off}
	// NewDevice reads the interface's MTU by name (an ioctl on a socket of
	// the calling thread's namespace): outside the Manager's namespace it
	// would fall back to 1420 and pad full-size packets past the underlay.
	_ = m.inNS(func() error {
		u.dev = device.NewDevice(td, bind, m.wgLogger(name))
		return nil
	})
	if err := u.ensureUAPI(); err != nil {
		u.dev.Close()
		return nil, err
	}
	return u, nil
}

// running reports whether the engine still runs (wireguard-go closes the
// device on a fatal TUN error).
func (u *userspaceDevice) running() bool {
	select {
	case <-u.dev.Wait():
		return false
	default:
		return true
	}
}

// up starts the engine's sockets and peers (a no-op when up).
func (u *userspaceDevice) up() error {
	if err := u.dev.Up(); err != nil {
		return fmt.Errorf("start wireguard-go: %w", err)
	}
	return nil
}

// ensureUAPI serves the UAPI socket /var/run/wireguard/<name>.sock, again
// when the previous listener ended (its socket file was deleted).
func (u *userspaceDevice) ensureUAPI() error {
	if u.uapi != nil {
		select {
		case <-u.uapiDone:
			u.uapi = nil
		default:
			return nil
		}
	}
	f, err := ipc.UAPIOpen(u.name)
	if err != nil {
		return fmt.Errorf("open UAPI socket for %s: %w", u.name, err)
	}
	l, err := ipc.UAPIListen(u.name, f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("listen on UAPI socket for %s: %w", u.name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go u.dev.IpcHandle(c)
		}
	}()
	u.uapi, u.uapiDone = l, done
	return nil
}

// stop closes the UAPI listener (removing its socket) and the engine. The
// TUN interface stays: it is persistent.
func (u *userspaceDevice) stop() error {
	var err error
	if u.uapi != nil {
		err = u.uapi.Close()
		<-u.uapiDone
		u.uapi = nil
	}
	u.dev.Close()
	return err
}

// nsBind opens wireguard-go's UDP sockets in the Manager's network
// namespace: wireguard-go opens them from its own goroutines (when the
// device goes up, when the listen port changes), which run on threads of
// the process's namespace. Used only with Options.NetnsPath; without it the
// engine gets the standard bind (and its sticky-socket route listener,
// which wireguard-go enables for that type only).
type nsBind struct {
	conn.Bind
	m *Manager
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = b.m.inNS(func() error {
		var err error
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}

// tunControl runs fn on the TUN device's file descriptor (without taking
// it out of the runtime's poller, as File().Fd() would).
func tunControl(td tun.Device, fn func(fd int) error) error {
	nt, ok := td.(*tun.NativeTun)
	if !ok {
		return fmt.Errorf("TUN device is a %T, not a native TUN device", td)
	}
	sc, err := nt.File().SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := sc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// probeOffloads finds what wireguard-go negotiated, by asking the kernel
// the same questions it asked (it keeps the answers unexported): the TUN
// device has virtio-net headers (then TCP offloads are on and it moves
// batches); UDP segmentation on the TUN device (TUN_F_USO4|6, Linux 6.2),
// which wireguard-go requests with the TCP offloads and keeps when the
// kernel accepts it; UDP_SEGMENT and UDP_GRO on a UDP socket of the
// namespace. Runs in the Manager's namespace.
func probeOffloads(td tun.Device) Offloads {
	var o Offloads
	if td.BatchSize() > 1 {
		o.TUNVnetHdr = true
		const tcp = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
		const udp = unix.TUN_F_USO4 | unix.TUN_F_USO6
		// The same request wireguard-go made on this device: it sets
		// nothing new, and succeeds exactly when it succeeded for it.
		o.TUNUSO = tunControl(td, func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcp|udp) }) == nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return o
	}
	defer unix.Close(fd)
	_, err = unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	o.UDPGSO = err == nil
	if unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil {
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO)
		o.UDPGRO = err == nil && v == 1
	}
	return o
}

// String lists the offloads that are on, e.g.
// "tun-vnet-hdr,tun-uso,udp-gso,udp-gro" (the agent API's names), or "none".
func (o Offloads) String() string {
	var on []string
	for _, f := range []struct {
		on   bool
		name string
	}{{o.TUNVnetHdr, "tun-vnet-hdr"}, {o.TUNUSO, "tun-uso"}, {o.UDPGSO, "udp-gso"}, {o.UDPGRO, "udp-gro"}} {
		if f.on {
			on = append(on, f.name)
		}
	}
	if len(on) == 0 {
		return "none"
	}
	return strings.Join(on, ",")
}

// wgLogger sends wireguard-go's lines to the Manager's logger: errors as
// errors, the verbose ones at V(4).
func (m *Manager) wgLogger(name string) *device.Logger {
	l := m.log().WithValues("device", name)
	return &device.Logger{
		Verbosef: func(format string, args ...any) { l.V(4).Info(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { l.Error(nil, fmt.Sprintf(format, args...)) },
	}
}
