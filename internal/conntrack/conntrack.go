// Package conntrack forgets pod addresses in the kernel's connection
// tracking table: when an address leaves its pod (the pod is deleted, or
// the address is routed to another interface), every conntrack entry whose
// traffic goes from or to it (it is the entry's original or reply source)
// is deleted, so that no flow of the old pod, kept alive by a peer that
// goes on sending, can reach the next pod that gets the address. The
// policy table accepts `ct state established,related` before any
// pod-specific check, so such an entry would carry packets past the new
// pod's NetworkPolicy both ways.
//
// The package has three parts: Gone, a pure function naming the addresses
// that went away between two lists of pod interfaces; Netlink, the kernel
// side in package ctnetlink (nf_conntrack_netlink through
// vishvananda/netlink, small enough for the CNI plugin, which calls its
// Forget on DEL and ADD); and Controller, the agent's consumer of the
// pod-interface watch.
package conntrack

import (
	"net/netip"

	"github.com/trellisnet/trellis/internal/conntrack/ctnetlink"
)

// Kernel deletes conntrack entries: every entry of the table whose traffic
// goes from or to one of addrs (its original or reply source). It returns
// how many it deleted.
type Kernel interface {
	DeleteAddrs(addrs []netip.Addr) (int, error)
}

var _ Kernel = (*ctnetlink.Netlink)(nil)
