//go:build kernel

package netlinkprog

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// fakeWG stands in for wgdev.Manager: its "device" is a persistent TUN
// interface of the desired name (what the userspace engine leaves in the
// kernel), so routes through it are real kernel routes.
type fakeWG struct {
	t     *testing.T
	ns    string // namespace name for `ip -n`
	h     *netlink.Handle
	calls []string
	peers []wireguard.Peer
}

func (f *fakeWG) EnsureDevice(_ context.Context, d wireguard.Device) error {
	f.calls = append(f.calls, "ensure "+d.Name)
	if _, err := f.h.LinkByName(d.Name); err != nil {
		if out, err := exec.Command("ip", "-n", f.ns, "tuntap", "add", "dev", d.Name, "mode", "tun").CombinedOutput(); err != nil {
			f.t.Fatalf("create TUN device %s: %v: %s", d.Name, err, out)
		}
	}
	l, err := f.h.LinkByName(d.Name)
	if err != nil {
		return err
	}
	if err := f.h.LinkSetMTU(l, d.MTU); err != nil {
		return err
	}
	if err := f.h.AddrReplace(l, &netlink.Addr{IPNet: prefixToIPNet(d.Addr)}); err != nil {
		return err
	}
	return f.h.LinkSetUp(l)
}

func (f *fakeWG) SetPeers(_ context.Context, device string, peers []wireguard.Peer) error {
	f.calls = append(f.calls, "peers "+device)
	f.peers = peers
	return nil
}

func (f *fakeWG) RemoveDevice(_ context.Context, name string) error {
	f.calls = append(f.calls, "remove "+name)
	l, err := f.h.LinkByName(name)
	if err != nil {
		return nil
	}
	return f.h.LinkDel(l)
}

var wgEnc = routing.Encryption{Enabled: true, Device: "trellis.wg", Port: 51871, Engine: config.EngineUserspace}

func (n *testNode) desiredEnc(t *testing.T, mode config.RoutingMode, enc routing.Encryption, peers ...routing.Peer) *routing.Desired {
	t.Helper()
	ul, err := n.dp.Underlay(local.NodeIP)
	if err != nil {
		t.Fatalf("Underlay: %v", err)
	}
	l := local
	l.Underlay = ul
	return routing.Compute(l, peers, routing.Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 4242, Port: 8472}, Encryption: enc})
}

func withKey(p routing.Peer, b byte) routing.Peer {
	for i := range p.PublicKey {
		p.PublicKey[i] = b
	}
	return p
}

func newWGTestNode(t *testing.T) (*testNode, *fakeWG) {
	n := newTestNode(t)
	ns := filepath.Base(n.dp.NetnsPath)
	f := &fakeWG{t: t, ns: ns, h: n.h}
	n.dp.WireGuard = f
	return n, f
}

// Peers with a key are routed into the device (link scope, no gateway,
// tagged with the agent's protocol), the device and peers are programmed
// before the routes, a keyless peer keeps the mode's route, and a second
// Apply changes nothing.
func TestKernelWireGuardRoutesThroughDevice(t *testing.T) {
	n, f := newWGTestNode(t)
	for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto} {
		t.Run(string(mode), func(t *testing.T) {
			f.calls = nil
			d := n.desiredEnc(t, mode, wgEnc, withKey(peerSame, 2), peerOther)
			n.apply(t, d)
			if !slices.Equal(f.calls, []string{"ensure trellis.wg", "peers trellis.wg"}) {
				t.Errorf("WireGuard calls %v, want ensure then peers", f.calls)
			}
			if len(f.peers) != 1 || f.peers[0].Node != "node2" || f.peers[0].Endpoint != netip.MustParseAddrPort("10.0.1.12:51871") {
				t.Errorf("peers %+v, want node2 at 10.0.1.12:51871", f.peers)
			}
			want := map[string]string{"10.244.1.0/24": "unreachable", "10.244.2.0/24": "<nil> trellis.wg"}
			if mode != config.ModeNative { // keyless node3 on another subnet: VXLAN
				want["10.244.3.0/24"] = "10.244.3.0 trellis.vxlan onlink"
			}
			eq(t, "routes", n.routes(t), want)
			rs, err := n.dp.ListRoutes()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if r.Dst.String() == "10.244.2.0/24" && (r.Scope != netlink.SCOPE_LINK || r.Protocol != RouteProtocol) {
					t.Errorf("route into the device: scope %v protocol %v, want link and %d", r.Scope, r.Protocol, RouteProtocol)
				}
			}
			before := routeSnapshot(t, n)
			n.apply(t, d)
			if after := routeSnapshot(t, n); !slices.Equal(before, after) {
				t.Errorf("second Apply changed routes:\n%v\n%v", before, after)
			}
		})
	}
}

func routeSnapshot(t *testing.T, n *testNode) []string {
	t.Helper()
	rs, err := n.dp.ListRoutes()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}

// A peer that withdraws its key goes back to the mode's route; one that
// publishes a key moves into the tunnel.
func TestKernelWireGuardKeyChangeMovesRoute(t *testing.T) {
	n, _ := newWGTestNode(t)
	n.apply(t, n.desiredEnc(t, config.ModeNative, wgEnc, withKey(peerSame, 2)))
	eq(t, "routes with key", n.routes(t), map[string]string{"10.244.1.0/24": "unreachable", "10.244.2.0/24": "<nil> trellis.wg"})
	n.apply(t, n.desiredEnc(t, config.ModeNative, wgEnc, peerSame))
	eq(t, "routes without key", n.routes(t), map[string]string{"10.244.1.0/24": "unreachable", "10.244.2.0/24": "10.0.1.12 ul0"})
}

// Without a wireguard.Kernel, a desired device is a clear error and no
// route is touched (none may point into a device nobody configures).
func TestKernelWireGuardWithoutKernelIsAnError(t *testing.T) {
	n := newTestNode(t)
	err := n.dp.Apply(context.Background(), n.desiredEnc(t, config.ModeNative, wgEnc, withKey(peerSame, 2)))
	if !errors.Is(err, ErrNoWireGuard) {
		t.Fatalf("Apply = %v, want ErrNoWireGuard", err)
	}
	if rs := n.routes(t); len(rs) != 0 {
		t.Errorf("routes installed despite the error: %v", rs)
	}
}

// Encryption off: the routes leave the device, then the device goes;
// without a wireguard.Kernel only a TUN or WireGuard link of that name is
// deleted, never another kind.
func TestKernelWireGuardRemovedWhenEncryptionOff(t *testing.T) {
	n, f := newWGTestNode(t)
	n.apply(t, n.desiredEnc(t, config.ModeNative, wgEnc, withKey(peerSame, 2)))
	off := routing.Encryption{Device: "trellis.wg"}
	f.calls = nil
	n.apply(t, n.desiredEnc(t, config.ModeNative, off, withKey(peerSame, 2)))
	if !slices.Equal(f.calls, []string{"remove trellis.wg"}) {
		t.Errorf("calls %v, want only remove", f.calls)
	}
	if _, err := n.h.LinkByName("trellis.wg"); err == nil {
		t.Error("device still there after encryption off")
	}
	eq(t, "routes", n.routes(t), map[string]string{"10.244.1.0/24": "unreachable", "10.244.2.0/24": "10.0.1.12 ul0"})

	// An agent started with encryption off has no wireguard.Kernel.
	n.dp.WireGuard = nil
	if err := f.EnsureDevice(context.Background(), wireguard.Device{Name: "trellis.wg", MTU: 1440, Addr: netip.MustParsePrefix("10.244.1.0/32")}); err != nil {
		t.Fatal(err)
	}
	n.apply(t, n.desiredEnc(t, config.ModeNative, off, peerSame))
	if _, err := n.h.LinkByName("trellis.wg"); err == nil {
		t.Error("leftover TUN device trellis.wg not deleted without a wireguard.Kernel")
	}
	other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "trellis.wg"}, PeerName: "wgpeer"}
	if err := n.h.LinkAdd(other); err != nil && !errors.Is(err, unix.EEXIST) {
		t.Fatal(err)
	}
	n.apply(t, n.desiredEnc(t, config.ModeNative, off, peerSame))
	if l, err := n.h.LinkByName("trellis.wg"); err != nil || l.Type() != "veth" {
		t.Errorf("a veth named trellis.wg was deleted or changed (%v, %v); only TUN/WireGuard links are ours", l, err)
	}
}
