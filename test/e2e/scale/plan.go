// Package scale is `make bench-scale`: one real Trellis agent on a real lab
// node in a cluster that grows by API-only Nodes, Pods, Namespaces and
// NetworkPolicies (objects with addresses and status, no kubelet behind
// them), measured at each step (internal/scalebench.Step). The bench itself
// is TestBenchScale (e2e build tag); this file is its pure part: the
// address plan of the ghost objects, the steps, percentiles and the table.
package scale

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The lab-only ranges of the ghost objects. Nothing is ever sent to them:
// the measured agent only programs routes, FDB and neighbour entries and
// set elements for them.
const (
	// ClusterCIDR is the bench lab's cluster range (trellis-lab up
	// --cluster-cidr): the real nodes get /24s at its start from
	// kube-controller-manager, the ghosts /27s from ghostBase on.
	ClusterCIDR  = "10.244.0.0/14"
	NodeCIDRMask = 24
	// ghostBase is where the ghosts' pod CIDRs start: 10.245.0.0 up to
	// 10.247.255.255 holds MaxGhosts /27s (32 addresses, up to 30 pods).
	ghostBase  = "10.245.0.0"
	ghostBits  = 27
	MaxGhosts  = 3 << 16 >> (32 - ghostBits)
	PodsPerCap = 30
	// nativeGhosts ghosts sit on the measured node's underlay subnet
	// (hosts .100–.199; routed natively in auto mode), the others in
	// vxlanRange, an unused part of the lab's underlay range 172.30.0.0/16
	// on no lab subnet (VXLAN peers in auto mode).
	nativeGhosts = 100
	nativeFirst  = 100
	vxlanRange   = "172.30.64.0/18"
)

// GhostCIDR is ghost i's pod CIDR.
func GhostCIDR(i int) netip.Prefix {
	b := netip.MustParseAddr(ghostBase).As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) << (32 - ghostBits)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), ghostBits)
}

// GhostPodIP is the address of the slot-th pod (0-based) on ghost i.
func GhostPodIP(i, slot int) netip.Addr {
	a := GhostCIDR(i).Addr()
	for k := 0; k <= slot; k++ {
		a = a.Next()
	}
	return a
}

// GhostAddr is ghost i's InternalIP: the first nativeGhosts on subnet (the
// measured node's underlay /24), the rest in vxlanRange.
func GhostAddr(i int, subnet netip.Prefix) netip.Addr {
	if i < nativeGhosts {
		b := subnet.Masked().Addr().As4()
		b[3] = byte(nativeFirst + i)
		return netip.AddrFrom4(b)
	}
	b := netip.MustParsePrefix(vxlanRange).Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i-nativeGhosts) + 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// StepSize is one planned size of the cluster: Nodes and Pods in the API,
// the lab's real ones included.
type StepSize struct{ Nodes, Pods int }

// ParseSteps reads "100/2000,1000/20000": nodes/pods per step, growing.
func ParseSteps(s string) ([]StepSize, error) {
	var out []StepSize
	var errs []error
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, p, ok := strings.Cut(f, "/")
		nodes, err1 := strconv.Atoi(n)
		pods, err2 := strconv.Atoi(p)
		if !ok || err1 != nil || err2 != nil || nodes < 1 || pods < 0 {
			errs = append(errs, fmt.Errorf("step %q: want NODES/PODS", f))
			continue
		}
		if len(out) > 0 && (nodes < out[len(out)-1].Nodes || pods < out[len(out)-1].Pods) {
			errs = append(errs, fmt.Errorf("step %q: steps must grow", f))
		}
		out = append(out, StepSize{nodes, pods})
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no steps"))
	}
	return out, errors.Join(errs...)
}

// Placement assigns ghost pods to ghosts: each step's new pods go to that
// step's new ghosts first (so every ghost holds about the same number),
// never more than PodsPerCap on one ghost.
type Placement struct {
	Slots []int // pods per ghost so far
}

// Grow adds ghosts up to total.
func (p *Placement) Grow(total int) {
	p.Slots = append(p.Slots, make([]int, max(0, total-len(p.Slots)))...)
}

// Place returns the ghost and slot of n new pods, spread over the ghosts
// from first on (the new ones), then over all when those are full.
func (p *Placement) Place(n, first int) ([][2]int, error) {
	out := make([][2]int, 0, n)
	for _, lo := range []int{first, 0} {
		if lo >= len(p.Slots) {
			continue
		}
		span := len(p.Slots) - lo
		for k := 0; len(out) < n && k < span*PodsPerCap; k++ {
			g := lo + k%span
			if p.Slots[g] < PodsPerCap {
				out = append(out, [2]int{g, p.Slots[g]})
				p.Slots[g]++
			}
		}
	}
	if len(out) < n {
		return out, fmt.Errorf("%d ghosts hold at most %d pods each: no room for %d more pods", len(p.Slots), PodsPerCap, n-len(out))
	}
	return out, nil
}

// Percentile returns the p-th percentile (nearest rank) of ds in ms.
func Percentile(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return float64(s[i].Microseconds()) / 1000
}

// sampleRange ghost indices at the end of the plan are the node-add
// samples' (created, measured and deleted again at every step).
const sampleRange = 64

// SampleNode is node-add sample k's index in the plan and its InternalIP:
// even samples on subnet (native in auto mode, hosts .200–.231), odd ones
// off every lab subnet (VXLAN).
func SampleNode(k int, subnet netip.Prefix) (int, netip.Addr) {
	i := MaxGhosts - sampleRange + k%sampleRange
	if k%2 == 1 {
		return i, GhostAddr(i, subnet)
	}
	b := subnet.Masked().Addr().As4()
	b[3] = byte(200 + (k%sampleRange)/2)
	return i, netip.AddrFrom4(b)
}
