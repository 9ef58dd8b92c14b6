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

// GetSetter reads and sets sysctls (Proc, or a wrapper recording the
// previous values).
type GetSetter interface {
	Get(path string) (string, error)
	Set(path, value string) error
}

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
	return EnableIPv6ForwardingWith(p, p, skip)
}

// IPv6Interfaces lists the names under net/ipv6/conf ("all" and "default"
// among them).
func (p Proc) IPv6Interfaces() ([]string, error) {
	entries, err := os.ReadDir(p.file(ipv6Conf))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", ipv6Conf, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// InterfaceLister lists the names under net/ipv6/conf (Proc).
type InterfaceLister interface {
	IPv6Interfaces() ([]string, error)
}

// EnableIPv6ForwardingWith is Proc.EnableIPv6Forwarding reading and
// setting through s (the agent passes a recorder, so that uninstall puts
// the previous values back) and listing the interfaces through l: the one
// implementation of the procedure, for the plugin and the agent.
func EnableIPv6ForwardingWith(s GetSetter, l InterfaceLister, skip func(name string) bool) ([]string, error) {
	cur, err := s.Get(ipv6AllForwarding)
	if err != nil {
		return nil, err
	}
	if cur == "1" {
		return nil, nil
	}
	names, err := l.IPv6Interfaces()
	if err != nil {
		return nil, err
	}
	var raised []string
	for _, name := range names {
		if name == "all" || name == "default" || name == "lo" || (skip != nil && skip(name)) {
			continue
		}
		key := ipv6Conf + "/" + name + "/accept_ra"
		v, err := s.Get(key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the interface went away meanwhile
		}
		if err != nil {
			return raised, err
		}
		if v != "1" {
			continue
		}
		if err := s.Set(key, acceptRAWhenRouter); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return raised, err
		}
		raised = append(raised, name)
	}
	sort.Strings(raised)
	return raised, s.Set(ipv6AllForwarding, "1")
}

// EnableIPv6Forwarding is Proc.EnableIPv6Forwarding in the calling thread's
// network namespace.
func EnableIPv6Forwarding(skip func(name string) bool) ([]string, error) {
	return Proc{}.EnableIPv6Forwarding(skip)
}
