package podlink

import (
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
)

// noRAKinds are the link kinds whose accept_ra is never raised: overlays
// between nodes (the agent's VXLAN device: another node sending RAs into
// it would become this node's router).
var noRAKinds = []string{"vxlan", "geneve", "wireguard"}

// NoRAInterface returns the test of the interfaces whose accept_ra turning
// IPv6 forwarding on (sysctl.EnableIPv6Forwarding) must leave alone: pod
// interfaces by name, and overlays (VXLAN, Geneve, WireGuard) by kind. An
// interface it cannot find (the list failed, or it appeared after the
// list) is left alone too. The links of the calling thread's network
// namespace are listed on the first call only (only when forwarding is
// still off). The plugin and the agent share it.
func NoRAInterface() func(name string) bool {
	var kinds map[string]string
	return func(name string) bool {
		if IsHostName(name) {
			return true
		}
		if kinds == nil {
			kinds = map[string]string{}
			links, err := netlinksafe.LinkList()
			if err != nil {
				return true // unknown: leave it as it is
			}
			for _, l := range links {
				kinds[l.Attrs().Name] = l.Type()
			}
		}
		kind, ok := kinds[name]
		return !ok || slices.Contains(noRAKinds, kind)
	}
}
