// Package ctnetlink is the kernel side of package conntrack: it deletes
// the conntrack entries of pod addresses through nf_conntrack_netlink. It
// has no dependency beyond netlink, so the CNI plugin links it too.
package ctnetlink

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/ipam"
)

// Netlink deletes conntrack entries in one network namespace, through
// nf_conntrack_netlink: one dump of the table per address family, then one
// delete per matching entry. (Kernels from 6.11 can also flush by a
// CTA_FILTER on one tuple field; a dump with the four-field "any of these
// addresses" match works on every kernel and costs one walk.)
type Netlink struct {
	// Handle is the netlink handle of the namespace (nil: the calling
	// thread's namespace).
	Handle *netlink.Handle
}

// dumpAttempts bounds the retries of a dump the kernel interrupted (the
// table changed while it was being read).
const dumpAttempts = 5

// DeleteAddrs deletes every entry that has one of addrs as its original or
// reply source or destination, and returns how many it deleted.
func (n *Netlink) DeleteAddrs(addrs []netip.Addr) (int, error) {
	h := n.Handle
	if h == nil {
		h = &netlink.Handle{}
	}
	byFamily := map[netlink.InetFamily]addrFilter{}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() {
			continue
		}
		fam := netlink.InetFamily(netlink.FAMILY_V4)
		if a.Is6() {
			fam = netlink.FAMILY_V6
		}
		if byFamily[fam] == nil {
			byFamily[fam] = addrFilter{}
		}
		byFamily[fam][a] = struct{}{}
	}
	total := 0
	for _, fam := range []netlink.InetFamily{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		f := byFamily[fam]
		if len(f) == 0 {
			continue
		}
		var err error
		for try := 1; try <= dumpAttempts; try++ {
			var n uint
			n, err = h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
			total += int(n)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return total, fmt.Errorf("delete conntrack entries of %d address(es): %w", len(f), err)
		}
	}
	return total, nil
}

// addrFilter matches an entry naming one of its addresses in either
// direction, as source or destination (netlink.CustomConntrackFilter).
type addrFilter map[netip.Addr]struct{}

func (f addrFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	for _, ip := range []net.IP{flow.Forward.SrcIP, flow.Forward.DstIP, flow.Reverse.SrcIP, flow.Reverse.DstIP} {
		if a, ok := netip.AddrFromSlice(ip); ok {
			if _, hit := f[a.Unmap()]; hit {
				return true
			}
		}
	}
	return false
}

// Forget deletes the conntrack entries of addrs in the calling thread's
// network namespace: the CNI plugin's call, on DEL before it releases the
// addresses and on ADD before the new pod's interface exists.
func Forget(addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	_, err := (&Netlink{}).DeleteAddrs(addrs)
	return err
}

// ForgetAllocations is Forget for the addresses of IPAM allocations.
func ForgetAllocations(allocs []ipam.Allocation) error {
	var addrs []netip.Addr
	for _, a := range allocs {
		addrs = append(addrs, a.Addr)
	}
	return Forget(addrs)
}
