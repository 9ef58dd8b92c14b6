// Package fastpath is Trellis's eBPF fast path: established, non-NATed pod
// TCP flows, IPv4 and IPv6, skip the host's forwarding path. Two tc programs (bpf/fastpath.c,
// compiled by `make bpf` with bpf2go into fastpath_bpfel.o, with the Go
// side of its maps and structs in fastpath_bpfel.go) run on the ingress of every
// pod's host-side interface and of the node's uplinks (underlay device,
// VXLAN device); they redirect a packet straight to its egress device (or,
// with bpf_redirect_peer, into the destination pod) only when the kernel's
// conntrack already holds its connection as established and not NATed.
// Every new connection, every SYN/FIN/RST and everything unusual takes the
// full path, so NetworkPolicy, kube-proxy and masquerade decide exactly as
// before (docs/fastpath.md).
//
// The package is split like the others: Desired computes the interface
// table and attachments from what the kernel reports (pure), Kernel applies
// them with netlink and the BPF maps, Controller is the full-state sync.
package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// Program names in the object (and the names of their tc filters).
const (
	ProgFromPod = fastpathProgTrellisFromPod
	ProgToPod   = fastpathProgTrellisToPod
)

// Kinds of interface in the ifaces map (bpf/fastpath.c IFACE_*).
const (
	KindPod    uint32 = 1
	KindUplink uint32 = 2
)

// Stat indexes the per-CPU counters (bpf/fastpath.c STAT_*): IPv4 packets
// are counted at the Stat, IPv6 packets at numStats + the Stat (STAT_V6).
type Stat uint32

// Counters kept by the programs.
const (
	StatFromPodRedirect Stat = iota
	StatFromPodLocal
	StatToPodRedirect
	StatPassNoConntrack
	StatPassNotEstablished
	StatPassNAT
	StatPassRoute
	StatPassSource
	StatPassMark
	numStats
)

// String names a counter (the Prometheus label value).
func (s Stat) String() string {
	switch s {
	case StatFromPodRedirect:
		return "from_pod_redirect"
	case StatFromPodLocal:
		return "from_pod_local"
	case StatToPodRedirect:
		return "to_pod_redirect"
	case StatPassNoConntrack:
		return "pass_no_conntrack"
	case StatPassNotEstablished:
		return "pass_not_established"
	case StatPassNAT:
		return "pass_nat"
	case StatPassRoute:
		return "pass_route"
	case StatPassSource:
		return "pass_source"
	case StatPassMark:
		return "pass_mark"
	}
	return fmt.Sprintf("stat_%d", uint32(s))
}

// Iface is one entry of the ifaces map (bpf/fastpath.c struct iface,
// generated).
type Iface = fastpathIface

// be32 returns a (IPv4) as the programs hold a __be32 field: its bytes in
// network order in memory, which is the host-order uint32 of those bytes.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// Programs are the loaded fast-path programs and maps.
type Programs struct {
	objs     fastpathObjects
	FromPod  *ebpf.Program
	ToPod    *ebpf.Program
	Ifaces   *ebpf.Map
	PodAddr  *ebpf.Map // local pods' IPv4 addresses
	PodAddr6 *ebpf.Map // local pods' IPv6 addresses
	Flows    *ebpf.Map // the IPv4 flow cache (bpf/fastpath.c), read by tests
	Flows6   *ebpf.Map // the IPv6 flow cache
	Config   *ebpf.Map
	Stats    *ebpf.Map
}

// Load loads the programs into the kernel (verifier, CO-RE relocation
// against the running kernel's BTF, conntrack kfunc resolution). It fails on
// kernels without BTF, tc BPF or the conntrack kfuncs (Linux < 6.0).
func Load() (*Programs, error) {
	// Kernels before 5.11 account BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("fast path: raise memlock limit: %w", err)
	}
	var objs fastpathObjects
	if err := loadFastpathObjects(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("fast path: the kernel rejected the programs: %+v", ve)
		}
		return nil, fmt.Errorf("fast path: load BPF programs: %w", err)
	}
	return &Programs{objs: objs, FromPod: objs.TrellisFromPod, ToPod: objs.TrellisToPod, Ifaces: objs.Ifaces,
		PodAddr: objs.PodAddrs, PodAddr6: objs.PodAddrs6, Flows: objs.Flows, Flows6: objs.Flows6, Config: objs.Config,
		Stats: objs.Stats}, nil
}

// Close releases the programs and maps held by this process. Programs
// still attached as tc filters stay in the kernel (they keep forwarding
// while the agent is down or restarting).
func (p *Programs) Close() {
	if p != nil {
		_ = p.objs.Close()
	}
}

// Settings are the programs' run-time settings (bpf/fastpath.c struct
// settings).
type Settings struct {
	// ConntrackTimeoutMs is the conntrack timeout refreshed on every
	// fast-pathed packet (0 disables the fast path without detaching it).
	ConntrackTimeoutMs uint32
	// ExemptCTMark: connections whose conntrack mark has any of these bits
	// set stay on the full path (0: none).
	ExemptCTMark uint32
}

// SetSettings writes the programs' settings.
func (p *Programs) SetSettings(s Settings) error {
	if err := p.Config.Put(uint32(0), fastpathSettings{CtTimeoutMs: s.ConntrackTimeoutMs, ExemptCtMark: s.ExemptCTMark}); err != nil {
		return fmt.Errorf("fast path: write config map: %w", err)
	}
	return nil
}

// ReadStats sums the per-CPU counters of both families.
func (p *Programs) ReadStats() (map[Stat]uint64, error) { return ReadStats(p.Stats) }

// ReadStatsIPv6 sums the per-CPU counters of IPv6 packets only.
func (p *Programs) ReadStatsIPv6() (map[Stat]uint64, error) { return ReadStatsIPv6(p.Stats) }

// ReadStats sums the per-CPU counters of a stats map (also one found by ID
// after the agent that loaded it exited), both families.
func ReadStats(m *ebpf.Map) (map[Stat]uint64, error) {
	out := make(map[Stat]uint64, numStats)
	for s := Stat(0); s < numStats; s++ {
		v4, err := readStat(m, uint32(s))
		if err != nil {
			return nil, fmt.Errorf("fast path: read counter %s: %w", s, err)
		}
		v6, err := readStat(m, uint32(numStats+s))
		if err != nil {
			return nil, fmt.Errorf("fast path: read IPv6 counter %s: %w", s, err)
		}
		out[s] = v4 + v6
	}
	return out, nil
}

// ReadStatsIPv6 is ReadStats for IPv6 packets only.
func ReadStatsIPv6(m *ebpf.Map) (map[Stat]uint64, error) {
	out := make(map[Stat]uint64, numStats)
	for s := Stat(0); s < numStats; s++ {
		v, err := readStat(m, uint32(numStats+s))
		if err != nil {
			return nil, fmt.Errorf("fast path: read IPv6 counter %s: %w", s, err)
		}
		out[s] = v
	}
	return out, nil
}

func readStat(m *ebpf.Map, index uint32) (uint64, error) {
	var per []uint64
	if err := m.Lookup(index, &per); err != nil {
		return 0, err
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	return sum, nil
}
