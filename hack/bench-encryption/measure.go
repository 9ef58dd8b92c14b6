package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/internal/wireguard"
	"github.com/trellisnet/trellis/internal/wireguard/strict"
)

// writeKey creates a private key file (0600) and returns its public key.
func (b *bench) writeKey(name string) (string, wgtypes.Key, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", wgtypes.Key{}, err
	}
	path := filepath.Join(b.work, name+".key")
	if err := os.WriteFile(path, []byte(k.String()+"\n"), 0o600); err != nil {
		return "", wgtypes.Key{}, err
	}
	return path, k.PublicKey(), nil
}

// startTunnels starts, on each node, the hand-built tunnel's helper and
// the Trellis helper.
func (b *bench) startTunnels() error {
	handKeys := make([]string, 2)
	handPubs := make([]wgtypes.Key, 2)
	trKeys := make([]string, 2)
	trPubs := make([]wgtypes.Key, 2)
	for i, n := range b.nodes {
		var err error
		if handKeys[i], handPubs[i], err = b.writeKey(n.Name + "-hand"); err != nil {
			return err
		}
		// The agent's key file, as node setup creates it.
		trKeys[i] = filepath.Join(b.work, n.Name+"-trellis", "wireguard.key")
		k, _, err := wireguard.LoadOrCreateKey(trKeys[i])
		if err != nil {
			return err
		}
		trPubs[i] = k.PublicKey()
	}
	for i, n := range b.nodes {
		peer := b.nodes[1-i]
		hs := helperSpec{Kind: "hand", Device: handDev, Port: handPort, MTU: underlayMTU - wireguard.OverheadIPv4, Addr: n.handAddr,
			KeyFile: handKeys[i], Peer: handPeer{PublicKey: handPubs[1-i].String(),
				Endpoint:   netip.AddrPortFrom(peer.IP, handPort),
				AllowedIPs: []netip.Prefix{netip.PrefixFrom(peer.handAddr.Addr(), 32)}}}
		h, err := startHelper(b.work, n.Name+"-hand", n.Path(), hs)
		if err != nil {
			return err
		}
		b.onExit(h.Stop)
		b.hand = append(b.hand, h)
	}
	for i, n := range b.nodes {
		peer := b.nodes[1-i]
		ts := helperSpec{Kind: "trellis", KeyFile: trKeys[i],
			Trellis: trellisSpec{Name: n.Name, NodeIP: n.IP, PodCIDRs: []netip.Prefix{n.podCIDR}, Engine: b.o.engine,
				Peers: []trellisPeer{{Name: peer.Name, NodeIP: peer.IP, PodCIDRs: []netip.Prefix{peer.podCIDR},
					PublicKey: trPubs[1-i].String()}}}}
		h, err := startHelper(b.work, n.Name+"-trellis", n.Path(), ts)
		if err != nil {
			return err
		}
		b.onExit(h.Stop)
		b.trellis = append(b.trellis, h)
	}
	return nil
}

// warmUp pings across each path until it answers (the first packet of a
// tunnel waits for its handshake).
func (b *bench) warmUp() error {
	a, z := b.nodes[0], b.nodes[1]
	for _, p := range []struct{ from, to, what string }{
		{a.Path(), z.handAddr.Addr().String(), "hand-built tunnel node→node"},
		{"/run/netns/" + a.pods["enc"], z.podIPs["enc"], "encrypted pod→pod"},
		{"/run/netns/" + a.pods["plain"], z.podIPs["plain"], "plaintext pod→pod"},
	} {
		var out []byte
		var err error
		for try := 0; try < 20; try++ {
			out, err = exec.Command("nsenter", "--net="+p.from, "--", "ping", "-c1", "-W1", p.to).CombinedOutput()
			if err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("%s (%s) does not answer: %v: %s", p.what, p.to, err, out)
		}
	}
	return nil
}

// side is one thing measured: a path and how to check it took that path.
type side struct {
	name         string
	src, dstNS   dpbench.Netns
	dst          string
	cpu          []int // processes doing its crypto
	rxNode       *node
	rxDev        string
	mustCarry    bool // rxDev must carry the traffic (else: must not)
	gbps, perCPU []float64
	rr           []float64
}

func (b *bench) sides() []*side {
	a, z := b.nodes[0], b.nodes[1]
	pods := func(kind string) (dpbench.Netns, dpbench.Netns, string) {
		return dpbench.Netns("/run/netns/" + a.pods[kind]), dpbench.Netns("/run/netns/" + z.pods[kind]), z.podIPs[kind]
	}
	hand := &side{name: "hand-built", src: dpbench.Netns(a.Path()), dstNS: dpbench.Netns(z.Path()),
		dst: z.handAddr.Addr().String(), cpu: pids(b.hand), rxNode: z, rxDev: handDev, mustCarry: true}
	enc := &side{name: "trellis encrypted", cpu: pids(b.trellis), rxNode: z, rxDev: config.DefaultWireGuardDevice, mustCarry: true}
	enc.src, enc.dstNS, enc.dst = pods("enc")
	plain := &side{name: "plaintext", rxNode: z, rxDev: config.DefaultWireGuardDevice}
	plain.src, plain.dstNS, plain.dst = pods("plain")
	return []*side{hand, enc, plain}
}

func pids(hs []*helper) []int {
	var p []int
	for _, h := range hs {
		p = append(p, h.pid)
	}
	return p
}

// throughput measures s once: iperf3 Gbit/s and, for a tunnel, Gbit per
// CPU-second of its processes; it checks the traffic took s's path.
func (b *bench) throughput(s *side) error {
	cpu0, err := cpuOf(s.cpu)
	if err != nil {
		return err
	}
	rx0, err := s.rxNode.linkBytes(s.rxDev)
	if err != nil {
		return err
	}
	g, err := dpbench.IperfWith(s.src, s.dstNS, s.dst, dpbench.IperfOptions{Seconds: b.o.seconds, Congestion: b.o.cc})
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	cpu1, err := cpuOf(s.cpu)
	if err != nil {
		return err
	}
	rx1, err := s.rxNode.linkBytes(s.rxDev)
	if err != nil {
		return err
	}
	gbit := g * float64(b.o.seconds)
	carried := float64(rx1-rx0) * 8 / 1e9
	switch {
	case s.mustCarry && carried < 0.9*gbit:
		return fmt.Errorf("%s: %s received %.2f Gbit of %.2f sent: the traffic did not take the tunnel", s.name, s.rxDev, carried, gbit)
	case !s.mustCarry && carried > 0.01*gbit:
		return fmt.Errorf("%s: %s received %.2f Gbit of %.2f sent: plaintext traffic went through the tunnel", s.name, s.rxDev, carried, gbit)
	}
	s.gbps = append(s.gbps, g)
	if len(s.cpu) > 0 {
		used := (cpu1 - cpu0).Seconds()
		if used <= 0 {
			return fmt.Errorf("%s: its processes used no CPU time", s.name)
		}
		s.perCPU = append(s.perCPU, gbit/used)
	}
	return nil
}

// measure runs the rounds: throughput of every side, then request/response.
func (b *bench) measure(logf func(string, ...any)) ([]dpbench.Row, error) {
	sides := b.sides()
	hand, enc, plain := sides[0], sides[1], sides[2]
	for i := 0; i < b.o.runs; i++ {
		for k := range sides {
			if err := b.throughput(sides[(i+k)%len(sides)]); err != nil {
				return nil, fmt.Errorf("run %d: %w", i+1, err)
			}
		}
		logf("  throughput run %d: hand-built %.3g, encrypted pod %.3g, plaintext pod %.3g Gbit/s; Gbit per CPU-s hand-built %.3g, Trellis %.3g",
			i+1, last(hand.gbps), last(enc.gbps), last(plain.gbps), last(hand.perCPU), last(enc.perCPU))
	}
	for i := 0; i < b.o.runs; i++ {
		for k := range sides {
			s := sides[(i+k)%len(sides)]
			r, err := dpbench.RR(s.src, s.dstNS, s.dst, b.o.seconds)
			if err != nil {
				return nil, fmt.Errorf("request/response run %d, %s: %w", i+1, s.name, err)
			}
			s.rr = append(s.rr, r)
		}
		logf("  request/response run %d: hand-built %.3g, encrypted pod %.3g, plaintext pod %.3g per s",
			i+1, last(hand.rr), last(enc.rr), last(plain.rr))
	}
	return []dpbench.Row{
		{Name: "encrypted pod→pod ÷ hand-built wireguard-go node→node, Gbit/s", Target: 0.95, Base: hand.gbps, Subj: enc.gbps},
		{Name: "encrypted pod→pod ÷ plaintext pod→pod, Gbit/s", Base: plain.gbps, Subj: enc.gbps},
		{Name: "Gbit per CPU-second of the WireGuard processes, Trellis ÷ hand-built", Base: hand.perCPU, Subj: enc.perCPU},
		{Name: "TCP 1-byte request/response encrypted ÷ plaintext pod, per s", Base: plain.rr, Subj: enc.rr},
		{Name: "TCP 1-byte request/response encrypted pod ÷ hand-built node, per s", Base: hand.rr, Subj: enc.rr},
	}, nil
}

func last(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return v[len(v)-1]
}

// offloadFeatures are the ethtool -k features that matter for a TUN-based
// WireGuard device.
var offloadFeatures = []string{"tx-checksumming", "tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-udp-segmentation",
	"generic-segmentation-offload", "generic-receive-offload", "rx-gro-list", "rx-udp-gro-forwarding"}

// offloads lists, per node and device, the offload features that are on
// (ethtool -k), whether both devices have the same, and whether the UDP
// sockets can use segmentation and GRO (UDP_SEGMENT, UDP_GRO), which the
// wireguard-go bind uses when the kernel has them.
func (b *bench) offloads() ([]string, error) {
	var lines []string
	for _, n := range b.nodes {
		sets := map[string]string{}
		for _, dev := range []string{config.DefaultWireGuardDevice, handDev} {
			out, err := exec.Command("ip", "netns", "exec", n.NSName, "ethtool", "-k", dev).CombinedOutput()
			if err != nil {
				return nil, fmt.Errorf("ethtool -k %s on %s: %v: %s", dev, n.Name, err, out)
			}
			sets[dev] = onFeatures(string(out))
			lines = append(lines, fmt.Sprintf("%s %s: %s", n.Name, dev, sets[dev]))
		}
		same := "same offloads on both devices"
		if sets[config.DefaultWireGuardDevice] != sets[handDev] {
			same = "THE DEVICES' OFFLOADS DIFFER"
		}
		seg, gro := udpOffloads(n.NS)
		lines = append(lines, fmt.Sprintf("%s: %s; UDP socket: segmentation (UDP_SEGMENT) %s, GRO (UDP_GRO) %s", n.Name, same, seg, gro))
	}
	return lines, nil
}

// onFeatures picks the offloadFeatures that ethtool -k shows on.
func onFeatures(ethtool string) string {
	on := map[string]bool{}
	for _, l := range strings.Split(ethtool, "\n") {
		name, val, ok := strings.Cut(strings.TrimSpace(l), ":")
		if ok && strings.HasPrefix(strings.TrimSpace(val), "on") {
			on[name] = true
		}
	}
	var got []string
	for _, f := range offloadFeatures {
		if on[f] {
			got = append(got, f)
		}
	}
	sort.Strings(got)
	if len(got) == 0 {
		return "none"
	}
	return strings.Join(got, ", ")
}

// udpOffloads probes a UDP socket in n for UDP_SEGMENT and UDP_GRO.
func udpOffloads(n ns.NetNS) (seg, gro string) {
	seg, gro = "unknown", "unknown"
	_ = n.Do(func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		seg, gro = "no", "no"
		if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
			seg = "yes"
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1); err == nil {
			gro = "yes"
		}
		return nil
	})
	return seg, gro
}

// trellisStatus is what each Trellis device reports after the run.
func (b *bench) trellisStatus() []string {
	var lines []string
	for i, h := range b.trellis {
		st, err := h.Status()
		switch {
		case err != nil:
			lines = append(lines, fmt.Sprintf("%s: %v", b.nodes[i].Name, err))
		case st.Error != "":
			lines = append(lines, fmt.Sprintf("%s: %s", b.nodes[i].Name, st.Error))
		default:
			l := fmt.Sprintf("%s: engine %s, %d peer(s) with a handshake", b.nodes[i].Name, st.Engine, st.Handshakes)
			if st.Offloads != "" {
				l += ", offloads " + st.Offloads
			}
			lines = append(lines, l)
		}
	}
	return lines
}

// strictDrops is each node's strict table drop counter (nft list counter).
func (b *bench) strictDrops() []string {
	var lines []string
	for _, n := range b.nodes {
		out, err := exec.Command("ip", "netns", "exec", n.NSName, "nft", "list", "counter", "inet", strict.TableName,
			strict.CounterName).CombinedOutput()
		l := strings.Join(strings.Fields(string(out)), " ")
		if i := strings.LastIndex(l, "packets "); err == nil && i >= 0 {
			l = l[i:]
			if j := strings.Index(l, "}"); j >= 0 {
				l = strings.TrimSpace(l[:j])
			}
		}
		lines = append(lines, fmt.Sprintf("%s: strict table drops: %s", n.Name, l))
	}
	return lines
}
