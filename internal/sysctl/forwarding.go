package sysctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
)

// IPv6 forwarding and router advertisements.
//
// With net.ipv6.conf.<if>.forwarding=1 the kernel ignores router
// advertisements on an interface whose accept_ra is 1, and turning
// forwarding on purges the default routes it had learned from them on every
// interface whose accept_ra is not 2. A node that learns its default route
// by RA would lose it (at once, or when it expires). accept_ra=2 means
// "accept RAs even when forwarding"; raising 1 to 2 before forwarding is
// turned on keeps what the node had, and leaves 0 (the operator, or a
// network manager doing RA in user space, said no) as it is.
const (
	ipv6Conf           = "net/ipv6/conf"
	ipv6AllForwarding  = ipv6Conf + "/all/forwarding"
	acceptRAWhenRouter = "2"
)

// EnableIPv6Forwarding turns IPv6 forwarding on (net.ipv6.conf.all.forwarding=1)
// without breaking router advertisements: first every interface whose
// accept_ra is 1 gets accept_ra=2. skip (nil: none) names interfaces to
// leave alone (pod interfaces and overlays, which must never accept an RA
// from a pod or another node). "default", the value of interfaces made
// later, is left as it is: a device created afterwards (an overlay, say)
// must not start accepting RAs. It does nothing when forwarding is already
// on: whoever turned it on chose the RA settings. It returns the names
// whose accept_ra it raised, sorted.
func (p Proc) EnableIPv6Forwarding(skip func(name string) bool) ([]string, error) {
	cur, err := p.Get(ipv6AllForwarding)
	if err != nil {
		return nil, err
	}
	if cur == "1" {
		return nil, nil
	}
	entries, err := os.ReadDir(p.file(ipv6Conf))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", ipv6Conf, err)
	}
	var raised []string
	for _, e := range entries {
		name := e.Name()
		if name == "all" || name == "default" || name == "lo" || (skip != nil && skip(name)) {
			continue
		}
		key := ipv6Conf + "/" + name + "/accept_ra"
		v, err := p.Get(key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the interface went away meanwhile
		}
		if err != nil {
			return raised, err
		}
		if v != "1" {
			continue
		}
		if err := p.Set(key, acceptRAWhenRouter); err != nil {
			if _, serr := os.Stat(p.file(key)); errors.Is(serr, fs.ErrNotExist) {
				continue
			}
			return raised, err
		}
		raised = append(raised, name)
	}
	sort.Strings(raised)
	return raised, p.Set(ipv6AllForwarding, "1")
}

// EnableIPv6Forwarding is Proc.EnableIPv6Forwarding in the calling thread's
// network namespace.
func EnableIPv6Forwarding(skip func(name string) bool) ([]string, error) {
	return Proc{}.EnableIPv6Forwarding(skip)
}
