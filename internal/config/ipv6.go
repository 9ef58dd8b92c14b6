package config

import "fmt"

// IPv6Unsupported says why this configuration cannot serve IPv6 pod CIDRs,
// or "" when it can:
//
//   - encryption wireguard without strict mode: nothing would keep IPv6 pod
//     traffic between nodes from leaving in plaintext. Strict mode's table
//     drops IPv6 pod traffic to other nodes that does not leave through
//     the WireGuard device, so with it such traffic is encrypted or
//     dropped, never sent in the clear.
//   - routingMode bgp: it advertises IPv4 pod CIDRs only (its node-to-node
//     sessions carry ipv4-unicast), so other nodes would have no route to
//     a node's IPv6 pods.
//
// Validate refuses these when clusterCIDRs name an IPv6 prefix; node setup
// refuses a Node with an IPv6 pod CIDR under them (NotReady, no pods
// wired).
func (c *Config) IPv6Unsupported() string {
	switch {
	case c.EncryptionEnabled() && !c.EncryptionStrictEnabled():
		return "encryption wireguard without encryptionStrict cannot keep IPv6 pod traffic between nodes from leaving in plaintext; " +
			"set encryptionStrict: true (IPv6 pod traffic to other nodes is then encrypted or dropped), or use IPv4 pod CIDRs only"
	case c.RoutingMode == ModeBGP:
		return "routingMode bgp advertises IPv4 pod CIDRs only, so other nodes would have no route to IPv6 pods; " +
			"use routingMode native, vxlan or auto for IPv6, or IPv4 pod CIDRs only"
	}
	return ""
}

// validateIPv6 refuses clusterCIDRs with an IPv6 prefix under a
// configuration that cannot serve it (IPv6Unsupported).
func (c *Config) validateIPv6() []error {
	for i, p := range c.ClusterCIDRs {
		if p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() {
			if why := c.IPv6Unsupported(); why != "" {
				return []error{fmt.Errorf("clusterCIDRs[%d]: %v is IPv6, and %s", i, p, why)}
			}
		}
	}
	return nil
}
