// Package ipam is Trellis' node-local IP address management: a pure
// allocator over a set of subnets (this file) and a crash-safe, file-locked
// persistent store (store.go). Addresses are handled with net/netip and the
// logic is family-agnostic, so IPv6 and dual-stack are additions of ranges,
// not a rewrite.
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// ErrExhausted is returned (wrapped) when no address is free in any range.
var ErrExhausted = errors.New("address pool exhausted")

// Key identifies an attachment: the CNI (container ID, interface name) pair.
type Key struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

func (k Key) String() string { return k.ContainerID + "/" + k.IfName }

// Allocation is one address held by one attachment.
type Allocation struct {
	Key
	Addr netip.Addr `json:"addr"`
}

// State is everything the allocator remembers. It is plain data so that the
// store can persist it and tests can build it by hand.
type State struct {
	// Allocations in allocation order.
	Allocations []Allocation `json:"allocations"`
	// Last is, per range (its CIDR string), the last address handed out; the
	// next search starts after it, so a released address is reused only
	// after the rest of the range has been.
	Last map[string]netip.Addr `json:"last,omitempty"`
}

// Lookup returns the allocations held by key.
func (s *State) Lookup(key Key) []Allocation {
	var out []Allocation
	for _, a := range s.Allocations {
		if a.Key == key {
			out = append(out, a)
		}
	}
	return out
}

// Allocate gives key one address from each family present in ranges (the
// first range of a family with a free address wins). It is idempotent: an
// attachment that already holds an address in a range keeps it. It reports
// whether anything new was allocated.
func (s *State) Allocate(key Key, ranges []netip.Prefix) (addrs []netip.Addr, allocatedNew bool, err error) {
	if len(ranges) == 0 {
		return nil, false, errors.New("no subnets to allocate from")
	}
	used := make(map[netip.Addr]bool, len(s.Allocations))
	for _, a := range s.Allocations {
		used[a.Addr] = true
	}
	for _, fam := range families(ranges) {
		if existing, ok := s.heldInFamily(key, ranges, fam); ok {
			addrs = append(addrs, existing)
			continue
		}
		addr, err := s.allocateFamily(ranges, fam, used)
		if err != nil {
			return nil, false, err
		}
		s.Allocations = append(s.Allocations, Allocation{Key: key, Addr: addr})
		used[addr] = true
		addrs = append(addrs, addr)
		allocatedNew = true
	}
	return addrs, allocatedNew, nil
}

func (s *State) heldInFamily(key Key, ranges []netip.Prefix, is4 bool) (netip.Addr, bool) {
	for _, a := range s.Allocations {
		if a.Key != key || a.Addr.Is4() != is4 {
			continue
		}
		for _, r := range ranges {
			if r.Contains(a.Addr) {
				return a.Addr, true
			}
		}
	}
	return netip.Addr{}, false
}

func (s *State) allocateFamily(ranges []netip.Prefix, is4 bool, used map[netip.Addr]bool) (netip.Addr, error) {
	var tried []string
	for _, r := range ranges {
		if r.Addr().Is4() != is4 {
			continue
		}
		tried = append(tried, r.String())
		if addr, ok := s.nextFree(r, used); ok {
			if s.Last == nil {
				s.Last = map[string]netip.Addr{}
			}
			s.Last[r.String()] = addr
			return addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: no free address in %v", ErrExhausted, tried)
}

// nextFree scans r round-robin starting after the last address handed out.
func (s *State) nextFree(r netip.Prefix, used map[netip.Addr]bool) (netip.Addr, bool) {
	first, last, ok := Usable(r)
	if !ok {
		return netip.Addr{}, false
	}
	start := first
	if prev, ok := s.Last[r.String()]; ok && r.Contains(prev) && prev.Compare(last) < 0 && prev.Compare(first) >= 0 {
		start = prev.Next()
	}
	a := start
	for {
		if !used[a] {
			return a, true
		}
		if a == last {
			a = first
		} else {
			a = a.Next()
		}
		if a == start {
			return netip.Addr{}, false
		}
	}
}

// Usable returns the first and last address of r that may be handed out:
// the network address, the first host address (reserved as the subnet's
// gateway) and the last address (broadcast in IPv4) never are.
func Usable(r netip.Prefix) (first, last netip.Addr, ok bool) {
	r = r.Masked()
	bits := r.Addr().BitLen() - r.Bits()
	if bits < 2 { // /31, /32 and IPv6 /127, /128: nothing left after reservations
		return netip.Addr{}, netip.Addr{}, false
	}
	first = r.Addr().Next().Next()
	last = lastAddr(r).Prev()
	if first.Compare(last) > 0 {
		return netip.Addr{}, netip.Addr{}, false
	}
	return first, last, true
}

func lastAddr(r netip.Prefix) netip.Addr {
	b := r.Addr().AsSlice()
	hostBits := len(b)*8 - r.Bits()
	for i := len(b) - 1; i >= 0 && hostBits > 0; i-- {
		n := min(hostBits, 8)
		b[i] |= byte(1<<n - 1)
		hostBits -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func families(ranges []netip.Prefix) []bool {
	var out []bool
	for _, r := range ranges {
		if !slices.Contains(out, r.Addr().Is4()) {
			out = append(out, r.Addr().Is4())
		}
	}
	return out
}

// Release frees every address held by key and returns them.
func (s *State) Release(key Key) []netip.Addr {
	var freed []netip.Addr
	s.Allocations = slices.DeleteFunc(s.Allocations, func(a Allocation) bool {
		if a.Key == key {
			freed = append(freed, a.Addr)
			return true
		}
		return false
	})
	return freed
}

// GC frees every allocation whose key is not in valid, and returns them.
func (s *State) GC(valid map[Key]bool) []Allocation {
	var freed []Allocation
	s.Allocations = slices.DeleteFunc(s.Allocations, func(a Allocation) bool {
		if !valid[a.Key] {
			freed = append(freed, a)
			return true
		}
		return false
	})
	return freed
}
