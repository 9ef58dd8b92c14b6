package main

// The node helpers: the bench re-executes itself inside a node namespace
// (nsenter --net, unshare -m) so that each WireGuard device lives in a
// process of its own, as in an agent, with its own /var/run/wireguard (the
// UAPI socket directory is per mount namespace), and so that the CPU time of
// the process doing the crypto can be read from /proc/<pid>/stat.
//
//	hand    a hand-built wireguard-go tunnel, node→node: tun.CreateTUN +
//	        device.NewDevice, configured with wgctrl over its UAPI socket.
//	trellis the agent's code path (trellis.go).
//
// Protocol: the helper prints one JSON line (helperReady) when its device is
// up, then answers each "status" line on stdin with one JSON line, and
// exits (closing its device) when stdin closes.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// uapiDir is wgctrl's and wireguard-go's fixed UAPI socket directory.
const uapiDir = "/var/run/wireguard"

// helperSpec is what a helper is asked to build (a JSON file).
type helperSpec struct {
	Kind string `json:"kind"` // hand | trellis
	// Device, Port, MTU and Addr of the hand-built tunnel (the Trellis
	// device's come from the routing desired state).
	Device  string       `json:"device"`
	Port    int          `json:"port"`
	MTU     int          `json:"mtu"`
	Addr    netip.Prefix `json:"addr"`
	KeyFile string       `json:"keyFile"`
	// Peer of the hand-built tunnel.
	Peer handPeer `json:"peer"`
	// Trellis is the node's view for the agent's code path.
	Trellis trellisSpec `json:"trellis"`
}

type handPeer struct {
	PublicKey  string         `json:"publicKey"`
	Endpoint   netip.AddrPort `json:"endpoint"`
	AllowedIPs []netip.Prefix `json:"allowedIPs"`
}

// helperReady is the helper's first line.
type helperReady struct {
	PID   int    `json:"pid"`
	Error string `json:"error,omitempty"`
}

// helperStatus answers "status".
type helperStatus struct {
	Engine string `json:"engine"`
	// Handshakes counts peers with a handshake.
	Handshakes int `json:"handshakes"`
	// Offloads the device negotiated, as wgdev reports them (trellis).
	Offloads string `json:"offloads,omitempty"`
	Error    string `json:"error,omitempty"`
}

// runHelper is the helper process's main.
func runHelper(specPath string) error {
	b, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var s helperSpec
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	// A private /var/run/wireguard: the node's own UAPI directory.
	if err := os.MkdirAll(uapiDir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", uapiDir, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount a private %s: %w", uapiDir, err)
	}
	var dev helperDevice
	switch s.Kind {
	case "hand":
		dev, err = startHand(s)
	case "trellis":
		dev, err = startTrellis(s)
	default:
		err = fmt.Errorf("unknown helper kind %q", s.Kind)
	}
	if err != nil {
		_ = enc.Encode(helperReady{PID: os.Getpid(), Error: err.Error()})
		return err
	}
	defer dev.Close()
	if err := enc.Encode(helperReady{PID: os.Getpid()}); err != nil {
		return err
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "status" {
			continue
		}
		st := dev.Status()
		if err := enc.Encode(st); err != nil {
			return err
		}
	}
	return nil
}

type helperDevice interface {
	Status() helperStatus
	Close() error
}

// handDevice is the hand-built baseline.
type handDevice struct {
	name string
	dev  *device.Device
	uapi net.Listener
}

func (h *handDevice) Close() error {
	h.uapi.Close()
	h.dev.Close()
	return nil
}

func (h *handDevice) Status() helperStatus {
	st := helperStatus{Engine: "wireguard-go (hand-built)"}
	c, err := wgctrl.New()
	if err != nil {
		st.Error = err.Error()
		return st
	}
	defer c.Close()
	d, err := c.Device(h.name)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	for _, p := range d.Peers {
		if !p.LastHandshakeTime.IsZero() {
			st.Handshakes++
		}
	}
	return st
}

func discardf(string, ...any) {}

// startHand builds the baseline tunnel by hand: a TUN device, the
// wireguard-go device on it, its UAPI socket, then key, port and peer set
// with wgctrl, address and link state with netlink.
func startHand(s helperSpec) (helperDevice, error) {
	t, err := tun.CreateTUN(s.Device, s.MTU)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", s.Device, err)
	}
	logger := &device.Logger{Verbosef: discardf, Errorf: func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, s.Device+": "+f+"\n", a...)
	}}
	d := device.NewDevice(t, conn.NewDefaultBind(), logger)
	f, err := ipc.UAPIOpen(s.Device)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("UAPI socket: %w", err)
	}
	l, err := ipc.UAPIListen(s.Device, f)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("UAPI listen: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go d.IpcHandle(c)
		}
	}()
	h := &handDevice{name: s.Device, dev: d, uapi: l}
	if err := configureHand(s); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func configureHand(s helperSpec) error {
	key, err := readKey(s.KeyFile)
	if err != nil {
		return err
	}
	peerKey, err := wgtypes.ParseKey(s.Peer.PublicKey)
	if err != nil {
		return err
	}
	c, err := wgctrl.New()
	if err != nil {
		return err
	}
	defer c.Close()
	ep := net.UDPAddrFromAddrPort(s.Peer.Endpoint)
	var allowed []net.IPNet
	for _, p := range s.Peer.AllowedIPs {
		allowed = append(allowed, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	keepalive := time.Duration(0)
	if err := c.ConfigureDevice(s.Device, wgtypes.Config{PrivateKey: &key, ListenPort: &s.Port, ReplacePeers: true,
		Peers: []wgtypes.PeerConfig{{PublicKey: peerKey, Endpoint: ep, AllowedIPs: allowed,
			ReplaceAllowedIPs: true, PersistentKeepaliveInterval: &keepalive}}}); err != nil {
		return fmt.Errorf("wgctrl configure %s: %w", s.Device, err)
	}
	l, err := netlink.LinkByName(s.Device)
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: &net.IPNet{IP: s.Addr.Addr().AsSlice(),
		Mask: net.CIDRMask(s.Addr.Bits(), 32)}}); err != nil {
		return fmt.Errorf("address %s on %s: %w", s.Addr, s.Device, err)
	}
	return netlink.LinkSetUp(l)
}

func readKey(path string) (wgtypes.Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	return wgtypes.ParseKey(strings.TrimSpace(string(b)))
}

// helper is a running node helper, seen from the bench.
type helper struct {
	name  string
	pid   int
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startHelper runs spec in netns nsPath as a helper process.
func startHelper(work, name, nsPath string, s helperSpec) (*helper, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	specPath := filepath.Join(work, name+".json")
	if err := os.WriteFile(specPath, b, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", "--net="+nsPath, "--", "unshare", "-m", "--propagation", "private", "--",
		self, "-helper", specPath)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("helper %s: %w", name, err)
	}
	h := &helper{name: name, cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	var r helperReady
	if err := h.read(&r); err != nil {
		h.Stop()
		return nil, fmt.Errorf("helper %s: %w", name, err)
	}
	if r.Error != "" {
		h.Stop()
		return nil, fmt.Errorf("helper %s: %s", name, r.Error)
	}
	h.pid = r.PID
	return h, nil
}

func (h *helper) read(v any) error {
	if !h.out.Scan() {
		if err := h.out.Err(); err != nil {
			return err
		}
		return fmt.Errorf("helper exited")
	}
	return json.Unmarshal(h.out.Bytes(), v)
}

// Status asks the helper for its device's status.
func (h *helper) Status() (helperStatus, error) {
	var st helperStatus
	if _, err := io.WriteString(h.stdin, "status\n"); err != nil {
		return st, err
	}
	return st, h.read(&st)
}

// Stop closes the helper's stdin (it closes its device and exits) and
// waits for it.
func (h *helper) Stop() {
	h.stdin.Close()
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
}
