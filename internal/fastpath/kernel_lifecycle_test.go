//go:build kernel

package fastpath

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no map ID")
	}
	return id
}

// The agent exiting leaves the fast path working (tc filters hold the
// programs); a new agent replaces the programs atomically; fastPath: false
// detaches them and traffic continues on the full path; a deleted pod's
// entry leaves the map at the next sync.
func TestKernelFastPathLifecycle(t *testing.T) {
	a, b := topology(t)
	b.serve(t, 8080)
	dst := b.podIP.String() + ":8080"

	// Agent exits on both nodes.
	oldID := mapID(t, a.progs.Stats)
	a.progs.Close()
	b.progs.Close()
	old, err := ebpf.NewMapFromID(oldID)
	if err != nil {
		t.Fatalf("node a's stats map is gone after the agent closed it: %v", err)
	}
	defer old.Close()
	s0, err := ReadStats(old)
	if err != nil {
		t.Fatal(err)
	}
	a.send(t, dst, 4<<20)
	s1, _ := ReadStats(old)
	if delta(s1, s0, StatFromPodRedirect) == 0 {
		t.Fatalf("with the agent gone, node a fast-pathed nothing: %v", s1)
	}

	// A new agent on both nodes: new programs everywhere, the old ones idle.
	a.load(t)
	b.load(t)
	k := &Kernel{Handle: a.h}
	links, err := k.Links()
	if err != nil {
		t.Fatal(err)
	}
	have, err := k.Attached(links)
	if err != nil {
		t.Fatal(err)
	}
	if len(have) != 2 {
		t.Fatalf("node a: fast path attached to %d interfaces, want 2 (pod, ul0): %v", len(have), have)
	}
	for idx, id := range have {
		if id != a.ctl.ids[ProgFromPod] && id != a.ctl.ids[ProgToPod] {
			t.Errorf("node a: interface %d still runs program %d, not the new agent's", idx, id)
		}
	}
	n0 := a.stats(t)
	a.send(t, dst, 4<<20)
	s2, _ := ReadStats(old)
	if n1 := a.stats(t); delta(n1, n0, StatFromPodRedirect) == 0 {
		t.Errorf("node a: the new agent's programs fast-pathed nothing: %v", n1)
	}
	if s2[StatFromPodRedirect] != s1[StatFromPodRedirect] {
		t.Errorf("node a: the old programs still ran after the replacement")
	}
	// A second sync changes nothing (idempotent).
	if err := a.ctl.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if again, _ := k.Attached(links); len(again) != 2 || again[links[0].Index] != have[links[0].Index] {
		t.Errorf("second sync changed the attachments: %v -> %v", have, again)
	}

	// fastPath: false: the disabled controller detaches everything, and a
	// second sync finds nothing left.
	off, err := New(Config{Disabled: true, Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if left, _ := k.Attached(links); len(left) != 0 {
		t.Fatalf("filters left after the disabled controller's sync: %v", left)
	}
	if n, err := k.DetachAll(); err != nil || n != 0 {
		t.Fatalf("DetachAll after the disabled sync = %d, %v; want 0", n, err)
	}
	d0 := a.stats(t)
	a.send(t, dst, 1<<20)
	if d1 := a.stats(t); delta(d1, d0, StatFromPodRedirect)+delta(d1, d0, StatToPodRedirect) != 0 {
		t.Errorf("node a: fast path still ran after DetachAll: %v", d1)
	}

	// The pod goes away: its map entry follows at the next sync.
	if err := b.ctl.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	podLink, err := b.h.LinkByName(b.podIface)
	if err != nil {
		t.Fatal(err)
	}
	var v Iface
	if err := b.progs.Ifaces.Lookup(uint32(podLink.Attrs().Index), &v); err != nil || v.Kind != KindPod || v.Ipv4 != be32(b.podIP) {
		t.Fatalf("node b: map entry for the pod = %+v, %v", v, err)
	}
	var idx uint32
	if err := b.progs.PodAddr.Lookup(b.podIP.As4(), &idx); err != nil || idx != uint32(podLink.Attrs().Index) {
		t.Fatalf("node b: pod address entry = %d, %v; want %d", idx, err, podLink.Attrs().Index)
	}
	if err := b.h.LinkDel(podLink); err != nil {
		t.Fatal(err)
	}
	if err := b.ctl.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := b.progs.Ifaces.Lookup(uint32(podLink.Attrs().Index), &v); err == nil {
		t.Errorf("node b: map still holds the deleted pod's interface: %+v", v)
	}
	if err := b.progs.PodAddr.Lookup(b.podIP.As4(), &idx); err == nil {
		t.Errorf("node b: map still holds the deleted pod's address -> %d", idx)
	}
}

// packet builds an Ethernet frame of src's family (IPv4, or IPv6 for any
// other address, an IPv4-mapped one included) with a TCP header, or, for
// another protocol or next header, the same 20 bytes after the fixed IP
// header (checksums are not checked by the program).
func packet(src, dst netip.Addr, ttl uint8, proto uint8, tcpFlags uint8) []byte {
	var p, l4 []byte
	if src.Is4() {
		p = make([]byte, 14+20+20)
		binary.BigEndian.PutUint16(p[12:], unix.ETH_P_IP)
		ip := p[14:]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], 40)
		ip[8], ip[9] = ttl, proto
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		l4 = ip[20:]
	} else {
		p = make([]byte, 14+40+20)
		binary.BigEndian.PutUint16(p[12:], unix.ETH_P_IPV6)
		ip := p[14:]
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], 20)
		ip[6], ip[7] = proto, ttl
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		l4 = ip[40:]
	}
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], 8080)
	l4[12] = 5 << 4
	l4[13] = tcpFlags
	return p
}

// The programs' decisions on single packets (BPF_PROG_TEST_RUN, in node
// a's namespace, as if received from the pod's interface): only a
// well-formed segment from the pod's own address (IPv6: right after the
// fixed header), with an established conntrack entry, may be redirected;
// everything else continues on the full path and is counted by reason, in
// its family.
func TestKernelFastPathDecisions(t *testing.T)     { decisions(t, ipv4) }
func TestKernelFastPathIPv6Decisions(t *testing.T) { decisions(t, ipv6) }

func decisions(t *testing.T, f family) {
	a, b := f.topology(t)
	podIdx, ulIdx := a.index(t, a.podIface), b.index(t, "ul0")
	// Resolve node b's MAC on a (the FIB lookup needs the neighbour).
	b.serve(t, 8080)
	a.send(t, hostPort(f.pod(b), 8080), 1024)
	const ack, syn = 0x10, 0x02
	const hopByHop, icmpv6 = 0, 58
	src, dst := f.pod(a), f.pod(b)
	hops := "TTL"
	if f.v6 {
		hops = "hop limit"
	}
	type decision struct {
		name string
		pkt  []byte
		want Stat // numStats: no counter moves
	}
	fromPod := []decision{
		{"segment of an unknown connection", packet(src, dst, 64, unix.IPPROTO_TCP, ack), StatPassNoConntrack},
		{"spoofed source address", packet(f.pick("10.91.1.99", "fd00:91:1::99"), dst, 64, unix.IPPROTO_TCP, ack), StatPassSource},
		{hops + " expiring here", packet(src, dst, 1, unix.IPPROTO_TCP, ack), StatPassRoute},
		{"no route", packet(src, f.pick("192.0.2.1", "2001:db8::1"), 64, unix.IPPROTO_TCP, ack), StatPassRoute},
		{"SYN", packet(src, dst, 64, unix.IPPROTO_TCP, syn), numStats},
		{"UDP", packet(src, dst, 64, unix.IPPROTO_UDP, 0), numStats},
	}
	if f.v6 {
		fromPod = append(fromPod,
			decision{"the pod's IPv4-mapped address", packet(netip.AddrFrom16(a.podIP.As16()), dst, 64, unix.IPPROTO_TCP, ack), StatPassSource},
			decision{"link-local source", packet(netip.MustParseAddr("fe80::2"), dst, 64, unix.IPPROTO_TCP, ack), StatPassSource},
			decision{"ICMPv6", packet(src, dst, 64, icmpv6, 0), numStats},
			decision{"extension header", packet(src, dst, 64, hopByHop, ack), numStats},
		)
	}
	for _, c := range fromPod {
		a.decide(t, a.progs.FromPod, podIdx, c.name, c.pkt, c.want)
	}
	// trellis_to_pod on node b's uplink: only packets for a local pod are
	// looked at; everything else leaves after one hash lookup, uncounted.
	toPod := []decision{
		{"to_pod: segment of an unknown connection", packet(src, dst, 64, unix.IPPROTO_TCP, ack), StatPassNoConntrack},
		{"to_pod: for the node itself", packet(f.node(a), f.node(b), 64, unix.IPPROTO_TCP, ack), numStats},
		{"to_pod: for an address no pod has", packet(src, f.pick("10.91.2.99", "fd00:91:2::99"), 64, unix.IPPROTO_TCP, ack), numStats},
	}
	if f.v6 {
		toPod = append(toPod, decision{"to_pod: hop limit expiring here", packet(src, dst, 1, unix.IPPROTO_TCP, ack), numStats})
	}
	for _, c := range toPod {
		b.decide(t, b.progs.ToPod, ulIdx, c.name, c.pkt, c.want)
	}
}

// decide runs prog once on pkt as if received on interface ingress of n
// (BPF_PROG_TEST_RUN in n's namespace) and checks that it lets the packet
// continue on the full path, moving exactly counter want (numStats: none).
func (n *testNode) decide(t *testing.T, prog *ebpf.Program, ingress int, name string, pkt []byte, want Stat) {
	t.Helper()
	n.runOnce(t, prog, ingress, name, pkt, -1 /* TC_ACT_UNSPEC: continue on the full path */, want)
}
