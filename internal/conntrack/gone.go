package conntrack

import (
	"net/netip"
	"slices"

	"github.com/trellisnet/trellis/internal/podlink"
)

// holder identifies the interface an address is routed to. The index alone
// is not enough across a relist (a name is per attachment, an index per
// device), so both must match for an address to have stayed put.
type holder struct {
	index int
	name  string
}

// Gone returns the pod addresses of prev that cur no longer routes to the
// same interface: released (no interface of cur holds them) or moved
// (another interface does). The result is sorted and has no duplicates;
// nil when nothing went away.
func Gone(prev, cur []podlink.Interface) []netip.Addr {
	now := holders(cur)
	var out []netip.Addr
	for a, h := range holders(prev) {
		if n, ok := now[a]; !ok || n != h {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// holders maps each address to its interface. An address on two
// interfaces at once (a route replaced between two dumps) keeps the one
// with the lower index: the comparison is then stable, and a real move
// still shows in the next list.
func holders(l []podlink.Interface) map[netip.Addr]holder {
	m := map[netip.Addr]holder{}
	for _, i := range l {
		for _, a := range i.Addrs {
			a = a.Unmap()
			if old, ok := m[a]; ok && old.index <= i.Index {
				continue
			}
			m[a] = holder{index: i.Index, name: i.Name}
		}
	}
	return m
}
