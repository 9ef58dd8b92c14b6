//go:build kernel

package fastpath

import (
	"encoding/binary"
	"math"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// tcActRedirect is TC_ACT_REDIRECT, what bpf_redirect and bpf_redirect_peer
// return.
const tcActRedirect = 7

// runOnce runs prog once on pkt as if received on interface ingress of n
// (BPF_PROG_TEST_RUN in n's namespace) and checks its return value and that
// exactly counter want moved, by one (numStats: none), in the family of pkt
// (its EtherType) and in no other.
func (n *testNode) runOnce(t *testing.T, prog *ebpf.Program, ingress int, name string, pkt []byte, wantRet int32, want Stat) {
	t.Helper()
	var ctx [11]uint32 // struct __sk_buff up to ifindex: ingress_ifindex is field 9
	ctx[9] = uint32(ingress)
	before, before6 := n.stats(t), n.stats6(t)
	var ret uint32
	err := n.ns.Do(func(ns.NetNS) (err error) {
		ret, err = prog.Run(&ebpf.RunOptions{Data: pkt, Context: ctx})
		return err
	})
	if err != nil {
		t.Fatalf("%s: test run: %v", name, err)
	}
	after, after6 := n.stats(t), n.stats6(t)
	if int32(ret) != wantRet {
		t.Errorf("%s: program returned %d, want %d", name, int32(ret), wantRet)
	}
	v6 := binary.BigEndian.Uint16(pkt[12:]) == unix.ETH_P_IPV6
	for s := Stat(0); s < numStats; s++ {
		w, w6 := uint64(0), uint64(0)
		if s == want {
			w = 1
			if v6 {
				w6 = 1
			}
		}
		if got := delta(after, before, s); got != w {
			t.Errorf("%s: counter %s moved by %d, want %d", name, s, got, w)
		}
		if got := delta(after6, before6, s); got != w6 {
			t.Errorf("%s: IPv6 counter %s moved by %d, want %d", name, s, got, w6)
		}
	}
}

func (n *testNode) index(t *testing.T, name string) int {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

func (n *testNode) iface(t *testing.T, index int) Iface {
	t.Helper()
	var v Iface
	if err := n.progs.Ifaces.Lookup(uint32(index), &v); err != nil {
		t.Fatalf("ifaces[%d]: %v", index, err)
	}
	return v
}

func (n *testNode) putIface(t *testing.T, index int, v Iface) {
	t.Helper()
	if err := n.progs.Ifaces.Put(uint32(index), v); err != nil {
		t.Fatal(err)
	}
}

func (n *testNode) deleteIface(t *testing.T, index int) {
	t.Helper()
	if err := n.progs.Ifaces.Delete(uint32(index)); err != nil {
		t.Fatal(err)
	}
}

// putFlow writes a flow-cache entry of src's family for the test packets
// (40000 -> 8080) that stays fresh for the whole test.
func (n *testNode) putFlow(t *testing.T, src, dst netip.Addr, in int, v fastpathFlowVal) {
	t.Helper()
	v.Until = math.MaxUint64
	const sport, dport = 0x409c /* 40000, network order */, 0x901f /* 8080 */
	var err error
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		err = n.progs.Flows.Put(fastpathFlowKey{Saddr: binary.NativeEndian.Uint32(s[:]), Daddr: binary.NativeEndian.Uint32(d[:]),
			Sport: sport, Dport: dport, In: uint32(in)}, v)
	} else {
		err = n.progs.Flows6.Put(fastpathFlowKey6{Saddr: src.As16(), Daddr: dst.As16(), Sport: sport, Dport: dport, In: uint32(in)}, v)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Interface indexes are reused (a new pod's host interface often gets a
// just-deleted pod's): a cached verdict, of either family, redirects only
// to (and, from a pod, for) the interface incarnations it was decided for.
// Once the output or input interface's ifaces entry is gone or names
// another generation, the packet takes the full checks (here: no conntrack
// entry, or no allowed egress).
func TestKernelFastPathFlowCacheFollowsInterfaceIncarnation(t *testing.T) {
	flowCacheFollowsInterfaceIncarnation(t, ipv4)
}

func TestKernelFastPathIPv6FlowCacheFollowsInterfaceIncarnation(t *testing.T) {
	flowCacheFollowsInterfaceIncarnation(t, ipv6)
}

func flowCacheFollowsInterfaceIncarnation(t *testing.T, f family) {
	a, b := f.topology(t)
	src, dst := f.pod(a), f.pod(b)
	// Resolve the neighbours both ways (the full checks need them).
	b.serve(t, 8080)
	a.send(t, hostPort(dst, 8080), 1024)
	const ack = 0x10
	pkt := func() []byte { return packet(src, dst, 64, unix.IPPROTO_TCP, ack) }

	// The agent writes each interface's generation from its name.
	aPodIdx, aUlIdx, bPodIdx, bUlIdx := a.index(t, a.podIface), a.index(t, "ul0"), b.index(t, b.podIface), b.index(t, "ul0")
	for _, c := range []struct {
		n     *testNode
		index int
		name  string
	}{{a, aPodIdx, a.podIface}, {a, aUlIdx, "ul0"}, {b, bPodIdx, b.podIface}} {
		if got, want := c.n.iface(t, c.index).Gen, Generation(c.name); got != want {
			t.Errorf("node %s: ifaces entry of %s has generation %#x, want %#x", c.n.name, c.name, got, want)
		}
	}

	// trellis_to_pod on b's uplink: a cached verdict into b's pod.
	bPodEntry := b.iface(t, bPodIdx)
	if f.v6 && (bPodEntry.Ipv6 != dst.As16() || bPodEntry.Ipv4 != be32(b.podIP)) {
		t.Fatalf("node b: ifaces entry of the pod %+v lacks one of its addresses %s, %s", bPodEntry, b.podIP, dst)
	}
	b.putFlow(t, src, dst, bUlIdx,
		fastpathFlowVal{Out: uint32(bPodIdx), Stat: uint32(StatToPodRedirect), OutGen: bPodEntry.Gen})
	b.runOnce(t, b.progs.ToPod, bUlIdx, "to_pod: cached, same incarnation", pkt(), tcActRedirect, StatToPodRedirect)
	other := bPodEntry
	other.Gen ^= 0x5a5a5a5a // a new pod's interface at the same index, same address
	b.putIface(t, bPodIdx, other)
	b.runOnce(t, b.progs.ToPod, bUlIdx, "to_pod: cached, output index reused", pkt(), -1, StatPassNoConntrack)
	b.deleteIface(t, bPodIdx)
	b.runOnce(t, b.progs.ToPod, bUlIdx, "to_pod: cached, output entry deleted", pkt(), -1, StatPassRoute)
	b.putIface(t, bPodIdx, bPodEntry)
	b.runOnce(t, b.progs.ToPod, bUlIdx, "to_pod: cached, output entry back", pkt(), tcActRedirect, StatToPodRedirect)

	// trellis_from_pod on a's pod interface: a cached verdict to a's uplink.
	aPodEntry, aUlEntry := a.iface(t, aPodIdx), a.iface(t, aUlIdx)
	a.putFlow(t, src, dst, aPodIdx, fastpathFlowVal{Out: uint32(aUlIdx),
		Stat: uint32(StatFromPodRedirect), InGen: aPodEntry.Gen, OutGen: aUlEntry.Gen})
	a.runOnce(t, a.progs.FromPod, aPodIdx, "from_pod: cached, same incarnations", pkt(), tcActRedirect, StatFromPodRedirect)
	otherPod := aPodEntry
	otherPod.Gen ^= 0x5a5a5a5a // a new pod's interface at the same index, same address
	a.putIface(t, aPodIdx, otherPod)
	a.runOnce(t, a.progs.FromPod, aPodIdx, "from_pod: cached, input index reused", pkt(), -1, StatPassNoConntrack)
	a.putIface(t, aPodIdx, aPodEntry)
	otherUl := aUlEntry
	otherUl.Gen ^= 0x5a5a5a5a
	a.putIface(t, aUlIdx, otherUl)
	a.runOnce(t, a.progs.FromPod, aPodIdx, "from_pod: cached, output index reused", pkt(), -1, StatPassNoConntrack)
	a.deleteIface(t, aUlIdx)
	a.runOnce(t, a.progs.FromPod, aPodIdx, "from_pod: cached, output entry deleted", pkt(), -1, StatPassRoute)
	a.putIface(t, aUlIdx, aUlEntry)
	a.runOnce(t, a.progs.FromPod, aPodIdx, "from_pod: cached, entries back", pkt(), tcActRedirect, StatFromPodRedirect)
}
