package policy

import (
	"net/netip"
	"slices"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"
)

// A group's allow list is a function of the address: which protocols and
// ports each address may use. When a pod comes, goes or changes, the
// rules' peers change at its address x alone, so the allow list changes
// only there: the Compiler recomputes it over a window around x (the
// elements holding x-1, x and x+1, whose ends are boundaries of the
// canonical form that x cannot move) and splices the result into the
// previous list, writing only the elements that differ.

// maxWindowed is the most changed addresses a group is updated for
// window by window; beyond it the group is recomputed whole.
const maxWindowed = 64

// setPoint returns the sorted, disjoint, non-adjacent ranges rs with
// address x covered (on) or not.
func setPoint(rs []ipRange, x netip.Addr, on bool) []ipRange {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi.Compare(x) >= 0 })
	covered := i < len(rs) && rs[i].lo.Compare(x) <= 0
	switch {
	case on && !covered:
		merged := ipRange{x, x}
		lo, hi := i, i
		if i > 0 && adjacent(rs[i-1].hi, x) {
			merged.lo, lo = rs[i-1].lo, i-1
		}
		if i < len(rs) && adjacent(x, rs[i].lo) {
			merged.hi, hi = rs[i].hi, i+1
		}
		return slices.Replace(rs, lo, hi, merged)
	case !on && covered:
		var parts []ipRange
		if r := rs[i]; r.lo.Compare(x) < 0 {
			parts = append(parts, ipRange{r.lo, x.Prev()})
		}
		if r := rs[i]; r.hi.Compare(x) > 0 {
			parts = append(parts, ipRange{x.Next(), r.hi})
		}
		return slices.Replace(rs, i, i+1, parts...)
	}
	return rs
}

// clip returns the parts of sorted disjoint rs inside w.
func clip(rs []ipRange, w ipRange) []ipRange {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi.Compare(w.lo) >= 0 })
	var out []ipRange
	for ; i < len(rs) && rs[i].lo.Compare(w.hi) <= 0; i++ {
		out = append(out, ipRange{maxAddr(rs[i].lo, w.lo), minAddr(rs[i].hi, w.hi)})
	}
	return out
}

// spanAround is the span around x whose elements (address ranges, sorted and
// disjoint) may change when x does: from the start of the one holding
// x-1 (or x) to the end of the one holding x+1 (or x), within x's family.
func spanAround(spans []ipRange, x netip.Addr) ipRange {
	w := ipRange{x, x}
	holding := func(a netip.Addr) (ipRange, bool) {
		i := sort.Search(len(spans), func(i int) bool { return spans[i].hi.Compare(a) >= 0 })
		if i < len(spans) && spans[i].lo.Compare(a) <= 0 {
			return spans[i], true
		}
		return ipRange{}, false
	}
	if r, ok := holding(x); ok {
		w = r
	}
	if p := x.Prev(); p.IsValid() {
		if r, ok := holding(p); ok {
			w.lo = minAddr(w.lo, r.lo)
		}
	}
	if n := x.Next(); n.IsValid() {
		if r, ok := holding(n); ok {
			w.hi = maxAddr(w.hi, r.hi)
		}
	}
	return w
}

// allowWithin is allowFor restricted to the addresses of w, from the
// rules' current peers.
func (ix *index) allowWithin(p *Pod, dir direction, pols []*networkingv1.NetworkPolicy, w ipRange) allowList {
	var al allowList
	add := func(k peerKey, ports []networkingv1.NetworkPolicyPort) {
		r := ix.comp.rules[k]
		ranges := clip(r.ranges, w)
		addRuleRanges(&al, k, ranges, ports, p, func(name string, proto uint8) []portBox {
			return ix.comp.namedWithin(ranges, w, name, proto)
		})
	}
	for _, np := range pols {
		if dir == ingress {
			for i, r := range np.Spec.Ingress {
				add(peerKey{np: np, dir: dir, rule: i}, r.Ports)
			}
		} else {
			for i, r := range np.Spec.Egress {
				add(peerKey{np: np, dir: dir, rule: i}, r.Ports)
			}
		}
	}
	al.all = mergeRanges(al.all)
	al.ports = disjointBoxes(al.ports)
	return al
}

// namedWithin resolves a named port on the pods with an address in w that
// ranges admit.
func (c *Compiler) namedWithin(ranges []ipRange, w ipRange, name string, proto uint8) []portBox {
	var out []portBox
	order := c.addrIndex(w.lo).order
	i, _ := slices.BinarySearchFunc(order, w.lo, netip.Addr.Compare)
	for ; i < len(order) && order[i].Compare(w.hi) <= 0; i++ {
		ip := order[i]
		if !inRanges(ranges, ip) {
			continue
		}
		for _, st := range c.podsAt(ip) {
			v := st.view()
			if n, ok := namedPort(&v, name, proto); ok {
				out = append(out, portBox{src: ipRange{ip, ip}, proto: proto, lo: n, hi: n})
			}
		}
	}
	return out
}

// spliceAll replaces the ranges of all inside w by repl.
func spliceAll(all []ipRange, w ipRange, repl []ipRange) ([]ipRange, []ipRange) {
	i := sort.Search(len(all), func(i int) bool { return all[i].hi.Compare(w.lo) >= 0 })
	j := i
	for j < len(all) && all[j].lo.Compare(w.hi) <= 0 {
		j++
	}
	removed := slices.Clone(all[i:j])
	return slices.Replace(slices.Clone(all), i, j, repl...), removed
}

// spliceBoxes replaces the boxes of proto whose addresses lie inside w by
// repl (boxes of proto inside w).
func spliceBoxes(boxes []portBox, proto uint8, w ipRange, repl []portBox) ([]portBox, []portBox) {
	i := sort.Search(len(boxes), func(i int) bool {
		b := boxes[i]
		return b.proto > proto || (b.proto == proto && b.src.hi.Compare(w.lo) >= 0)
	})
	j := i
	for j < len(boxes) && boxes[j].proto == proto && boxes[j].src.lo.Compare(w.hi) <= 0 {
		j++
	}
	removed := slices.Clone(boxes[i:j])
	return slices.Replace(slices.Clone(boxes), i, j, repl...), removed
}

// protoSpans are the distinct address ranges of the boxes of proto.
func protoSpans(boxes []portBox, proto uint8) []ipRange {
	var out []ipRange
	for _, b := range boxes {
		if b.proto == proto && (len(out) == 0 || out[len(out)-1] != b.src) {
			out = append(out, b.src)
		}
	}
	return out
}

// updatedAt returns al updated for the changed addresses xs, and the
// elements removed and added.
func (ix *index) updatedAt(al allowList, p *Pod, dir direction, pols []*networkingv1.NetworkPolicy, xs []netip.Addr) (allowList, []ipRange, []ipRange, []portBox, []portBox) {
	var delAll, addAll []ipRange
	var delBox, addBox []portBox
	for _, x := range xs {
		w := spanAround(al.all, x)
		within := ix.allowWithin(p, dir, pols, w)
		var removed []ipRange
		al.all, removed = spliceAll(al.all, w, within.all)
		delAll, addAll = append(delAll, removed...), append(addAll, within.all...)
		for _, proto := range []uint8{6, 17, 132} {
			w := spanAround(protoSpans(al.ports, proto), x)
			within := ix.allowWithin(p, dir, pols, w)
			var repl []portBox
			for _, b := range within.ports {
				if b.proto == proto {
					repl = append(repl, b)
				}
			}
			var removedBoxes []portBox
			al.ports, removedBoxes = spliceBoxes(al.ports, proto, w, repl)
			delBox, addBox = append(delBox, removedBoxes...), append(addBox, repl...)
		}
	}
	return al, delAll, addAll, delBox, addBox
}
