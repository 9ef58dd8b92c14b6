package nodesetup

import (
	"fmt"
	"net/netip"
	"slices"
)

// IPv6Forwarder turns IPv6 forwarding on for the node (net.ipv6.conf.all.
// forwarding=1, the uplinks' accept_ra 1 raised to 2 first) and returns
// the interfaces whose accept_ra it raised. RecordedIPv6Forwarding is the
// agent's.
type IPv6Forwarder interface {
	EnableIPv6Forwarding() (raised []string, err error)
}

// ReasonIPv6Unsupported is the problem reported while this Node has an
// IPv6 pod CIDR that a feature turned on cannot serve (encryption without
// strict mode, routingMode bgp): the node stays NotReady rather than
// letting its pods' IPv6 traffic leave in plaintext or go nowhere.
const ReasonIPv6Unsupported = "IPv6Unsupported"

// ConditionReasonIPv6Unsupported: NetworkUnavailable=True while this
// Node's IPv6 pod CIDR cannot be served (ReasonIPv6Unsupported).
const ConditionReasonIPv6Unsupported = "TrellisIPv6Unsupported"

// hasIPv6 reports whether one of cidrs is an IPv6 prefix.
func hasIPv6(cidrs []netip.Prefix) bool {
	return slices.ContainsFunc(cidrs, func(p netip.Prefix) bool { return p.Addr().Is6() && !p.Addr().Is4In6() })
}

// enableIPv6Forwarding turns IPv6 forwarding on through f (nil: an error,
// the node's IPv6 pods would reach nothing).
func enableIPv6Forwarding(f IPv6Forwarder) ([]string, error) {
	if f == nil {
		return nil, fmt.Errorf("IPv6 forwarding: no IPv6 forwarder configured")
	}
	raised, err := f.EnableIPv6Forwarding()
	if err != nil {
		return raised, fmt.Errorf("turn IPv6 forwarding on: %w", err)
	}
	return raised, nil
}
