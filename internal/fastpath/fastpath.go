// Package fastpath is Trellis's eBPF fast path: established, non-NATed pod
// TCP flows skip the host's forwarding path. Two tc programs (bpf/fastpath.c,
// compiled into fastpath.bpf.o by `make bpf`) run on the ingress of every
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
	"bytes"
	_ "embed"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

//go:embed fastpath.bpf.o
var object []byte

// Program names in the object (and the names of their tc filters).
const (
	ProgFromPod = "trellis_from_pod"
	ProgToPod   = "trellis_to_pod"
)

// Kinds of interface in the ifaces map (bpf/fastpath.c IFACE_*).
const (
	KindPod    uint32 = 1
	KindUplink uint32 = 2
)

// Stat indexes the per-CPU counters (bpf/fastpath.c STAT_*).
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
	}
	return fmt.Sprintf("stat_%d", uint32(s))
}

// Iface is one entry of the ifaces map (bpf/fastpath.c struct iface).
type Iface struct {
	Kind uint32
	// IPv4 is the pod's address, in the byte order the
	// programs compare it with (KindPod).
	IPv4 [4]byte
}

type bpfConfig struct {
	CTTimeoutMS uint32
	Pad         uint32
}

// Programs are the loaded fast-path programs and maps.
type Programs struct {
	coll    *ebpf.Collection
	FromPod *ebpf.Program
	ToPod   *ebpf.Program
	Ifaces  *ebpf.Map
	PodAddr *ebpf.Map
	Flows   *ebpf.Map // the flow cache (bpf/fastpath.c), read by tests
	Config  *ebpf.Map
	Stats   *ebpf.Map
}

// Load loads the programs into the kernel (verifier, CO-RE relocation
// against the running kernel's BTF, conntrack kfunc resolution). It fails on
// kernels without BTF, tc BPF or the conntrack kfuncs (Linux < 6.0).
func Load() (*Programs, error) {
	// Kernels before 5.11 account BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("fast path: raise memlock limit: %w", err)
	}
	spec, err := loadSpec()
	if err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("fast path: the kernel rejected the programs: %+v", ve)
		}
		return nil, fmt.Errorf("fast path: load BPF programs: %w", err)
	}
	p := &Programs{coll: coll, FromPod: coll.Programs[ProgFromPod], ToPod: coll.Programs[ProgToPod],
		Ifaces: coll.Maps["ifaces"], PodAddr: coll.Maps["pod_addrs"], Flows: coll.Maps["flows"], Config: coll.Maps["config"], Stats: coll.Maps["stats"]}
	if p.FromPod == nil || p.ToPod == nil || p.Ifaces == nil || p.PodAddr == nil || p.Flows == nil || p.Config == nil || p.Stats == nil {
		coll.Close()
		return nil, errors.New("fast path: BPF object lacks an expected program or map")
	}
	return p, nil
}

func loadSpec() (*ebpf.CollectionSpec, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, fmt.Errorf("fast path: parse BPF object: %w", err)
	}
	return spec, nil
}

// Close releases the programs and maps held by this process. Programs
// still attached as tc filters stay in the kernel (they keep forwarding
// while the agent is down or restarting).
func (p *Programs) Close() {
	if p != nil && p.coll != nil {
		p.coll.Close()
	}
}

// SetConntrackTimeout sets the conntrack timeout refreshed on every
// fast-pathed packet (0 disables the fast path without detaching it).
func (p *Programs) SetConntrackTimeout(ms uint32) error {
	if err := p.Config.Put(uint32(0), bpfConfig{CTTimeoutMS: ms}); err != nil {
		return fmt.Errorf("fast path: write config map: %w", err)
	}
	return nil
}

// ReadStats sums the per-CPU counters.
func (p *Programs) ReadStats() (map[Stat]uint64, error) { return ReadStats(p.Stats) }

// ReadStats sums the per-CPU counters of a stats map (also one found by ID
// after the agent that loaded it exited).
func ReadStats(m *ebpf.Map) (map[Stat]uint64, error) {
	out := make(map[Stat]uint64, numStats)
	for s := Stat(0); s < numStats; s++ {
		var per []uint64
		if err := m.Lookup(uint32(s), &per); err != nil {
			return nil, fmt.Errorf("fast path: read counter %s: %w", s, err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[s] = sum
	}
	return out, nil
}
