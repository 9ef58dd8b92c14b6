//go:build kernel

package netlinkprog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/wireguard"
	"github.com/trellisnet/trellis/internal/wireguard/wgdev"
)

// encryptedNode is a node namespace programmed by the agent's dataplane
// with the real WireGuard manager (userspace engine).
type encryptedNode struct {
	*netnstest.Node
	peer   routing.Peer
	params routing.Params
	dp     *Programmer
	wg     *wgdev.Manager
}

// twoEncryptedNodes wires two node namespaces (a "pod" address on lo each)
// through routing.Compute and Programmer.Apply with encryption on in the
// given mode: each publishes the public key of its key file, as node setup
// does, and programs the other as a WireGuard peer. Device names differ per
// node: the UAPI socket directory is shared by the test's namespaces.
func twoEncryptedNodes(t *testing.T, mode config.RoutingMode) (a, b *encryptedNode, podMTU int) {
	t.Helper()
	na, nb := netnstest.NewLinkedNodes(t, "10.0.1.11/24", "10.0.1.12/24")
	na.Configure(t, "lo", "10.244.1.5/32")
	nb.Configure(t, "lo", "10.244.2.5/32")
	dir := t.TempDir()
	nodes := []*encryptedNode{
		{Node: na, peer: routing.Peer{Name: "a", NodeIP: netip.MustParseAddr("10.0.1.11"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}},
		{Node: nb, peer: routing.Peer{Name: "b", NodeIP: netip.MustParseAddr("10.0.1.12"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}}},
	}
	for _, n := range nodes {
		keyFile := filepath.Join(dir, n.peer.Name, "wireguard.key")
		key, _, err := wireguard.LoadOrCreateKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		n.peer.PublicKey = key.PublicKey()
		if n.wg, err = wgdev.New(wgdev.Options{KeyFile: keyFile, NetnsPath: n.NS.Path()}); err != nil {
			t.Fatal(err)
		}
		n.dp = &Programmer{Handle: n.Handle, NetnsPath: n.NS.Path(), WireGuard: n.wg}
		n.params = routing.Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 99, Port: 4789},
			Encryption: routing.Encryption{Enabled: true, Device: fmt.Sprintf("wgr%d%s", os.Getpid()%100000, n.peer.Name),
				Port: 51871, Engine: config.EngineUserspace}}
		t.Cleanup(func() {
			if err := n.wg.RemoveDevice(context.Background(), n.params.Encryption.Device); err != nil {
				t.Errorf("remove %s: %v", n.params.Encryption.Device, err)
			}
			_ = n.wg.Close()
		})
	}
	peers := []routing.Peer{nodes[0].peer, nodes[1].peer}
	for _, n := range nodes {
		ul, err := n.dp.Underlay(n.peer.NodeIP)
		if err != nil {
			t.Fatal(err)
		}
		local := routing.LocalNode{Name: n.peer.Name, NodeIP: n.peer.NodeIP, Underlay: ul, PodCIDRs: n.peer.PodCIDRs, PublicKey: n.peer.PublicKey}
		d := routing.Compute(local, peers, n.params)
		if d.WireGuard == nil || len(d.WireGuard.Peers) != 1 {
			t.Fatalf("%s: desired WireGuard %+v, want the device and one peer", n.peer.Name, d.WireGuard)
		}
		if err := n.dp.Apply(context.Background(), d); err != nil {
			t.Fatalf("Apply on %s: %v", n.peer.Name, err)
		}
		podMTU = routing.PodMTU(n.params, ul.MTU)
	}
	return nodes[0], nodes[1], podMTU
}

// In every mode, with encryption on, pod traffic between the nodes goes
// through the WireGuard devices the dataplane programmed: full-size DF
// datagrams at the reduced pod MTU pass unfragmented, one byte more is
// refused at the sender, and the peers count the bytes and a handshake.
func TestKernelWireGuardPodTraffic(t *testing.T) {
	for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto} {
		t.Run(string(mode), func(t *testing.T) {
			a, b, podMTU := twoEncryptedNodes(t, mode)
			if podMTU != 1440 {
				t.Fatalf("pod MTU %d, want 1500 - 60", podMTU)
			}
			ca := netnstest.DFUDP(t, a.NS.Path(), "10.244.1.5:7001")
			cb := netnstest.DFUDP(t, b.NS.Path(), "10.244.2.5:7002")
			fragA, fragB := ipFragCreates(t, a.Node), ipFragCreates(t, b.Node)
			// The first datagram may wait for the handshake; wireguard-go queues it.
			if err := roundTrip(ca, cb, 100); err != nil {
				t.Fatalf("small datagram pod->pod through the tunnel: %v", err)
			}
			if err := roundTrip(ca, cb, podMTU-28); err != nil {
				t.Fatalf("full-size DF datagram pod->pod through the tunnel: %v", err)
			}
			if da, db := ipFragCreates(t, a.Node)-fragA, ipFragCreates(t, b.Node)-fragB; da != 0 || db != 0 {
				t.Errorf("%d/%d fragments created on the path; want none", da, db)
			}
			if _, err := ca.WriteToUDP(make([]byte, podMTU-27), cb.LocalAddr().(*net.UDPAddr)); !errors.Is(err, syscall.EMSGSIZE) {
				t.Errorf("oversize DF datagram: err %v, want EMSGSIZE", err)
			}
			st, err := a.wg.Status(a.params.Encryption.Device)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Peers) != 1 || st.Peers[0].PublicKey != b.peer.PublicKey || st.Peers[0].LastHandshake.IsZero() ||
				st.Peers[0].TxBytes == 0 || st.Peers[0].RxBytes == 0 {
				t.Errorf("node a's device: peers %+v; want b with a handshake and bytes both ways", st.Peers)
			}
			if l, err := a.Handle.LinkByName("trellis.vxlan"); err == nil && l.Attrs().Statistics != nil && l.Attrs().Statistics.TxPackets > 0 {
				t.Errorf("pod traffic left by the VXLAN device (%d packets), not the tunnel", l.Attrs().Statistics.TxPackets)
			}
		})
	}
}
