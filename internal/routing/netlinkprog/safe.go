package netlinkprog

import (
	"errors"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// dumpAttempts matches netlinksafe's limit on interrupted dumps.
const dumpAttempts = 5

// netlinksafe.Handle (containernetworking/plugins v1.10.0) wraps the route
// and link dumps this package uses, but not AddrList or NeighList on a
// handle. addrList and neighList give those two the same treatment:
// retry while the kernel reports the dump interrupted, then keep the last
// (possibly inconsistent) answer, as netlinksafe does. That is safe here:
// every sync adds what is missing and deletes only what it listed, and the
// next sync sees a consistent dump.

func addrList(h netlinksafe.Handle, link netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return h.AddrList(link, family) })
}

func neighList(h netlinksafe.Handle, linkIndex, family int) ([]netlink.Neigh, error) {
	return retryDump(func() ([]netlink.Neigh, error) { return h.NeighList(linkIndex, family) })
}

func retryDump[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpAttempts {
		if v, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, nil
}
