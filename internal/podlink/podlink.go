// Package podlink is the contract between the CNI plugin (which writes it)
// and the agent (which reads it) on one node:
//
//   - the host-side interface of every pod attachment is named HostName
//     (Prefix + a hash of container ID and ifname), so the plugin finds it on
//     DEL without the pod's namespace;
//   - its alias (Alias) names the attachment (network, container ID, ifname)
//     and, when the runtime passed them, the pod (namespace, name, UID);
//   - its device group (GroupForNamespace) names the pod's namespace to
//     nftables before the agent has seen the pod;
//   - each pod address is a host route (HostRoute: /32 or /128, scope link,
//     no gateway, main table) on that interface;
//   - the node state file (NodeState) carries the node's pod subnets, MTU
//     and readiness from the agent to the plugin.
//
// List and Watcher are the one reader of local pod interfaces: policy and
// the fast path read the contract through them.
package podlink

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every pod's host-side interface.
const Prefix = "trl"

// Wildcard matches every host-side pod interface in nftables rules.
const Wildcard = Prefix + "*"

// HostName is the deterministic host-side interface name of an attachment:
// Prefix + 11 hex digits of sha256(containerID "/" ifName), 14 characters.
func HostName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return Prefix + hex.EncodeToString(sum[:])[:11]
}

// IsHostName reports whether name is a host-side pod interface's name.
func IsHostName(name string) bool { return strings.HasPrefix(name, Prefix) }

// GroupUnknown is the device group of an interface whose namespace the
// runtime did not pass (no K8S_POD_NAMESPACE in CNI_ARGS): the kernel's
// default group.
const GroupUnknown uint32 = 0

// GroupForNamespace returns the device group (`ip link set dev X group N`)
// of the host-side interfaces of pods in namespace ns: a 31-bit FNV-1a hash,
// never 0. nftables matches it with iifgroup/oifgroup. Two namespaces may
// share a group; readers must only ever let a collision make them more
// cautious (treat the pair as isolated).
func GroupForNamespace(ns string) uint32 {
	if ns == "" {
		return GroupUnknown
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(ns))
	g := h.Sum32() & 0x7fffffff
	if g == 0 {
		g = 1
	}
	return g
}

// HostRoute is the route the plugin installs on the host for each pod
// address: the address as a host prefix, scope link, on the host-side
// interface, in the main table.
func HostRoute(linkIndex int, a netip.Addr) *netlink.Route {
	return &netlink.Route{LinkIndex: linkIndex, Dst: HostPrefix(a), Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN}
}

// HostPrefix is a as a /32 (IPv4) or /128 (IPv6) prefix.
func HostPrefix(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// hostRouteAddr returns the pod address a route carries when it is a host
// route of the contract (any interface; the caller checks the link).
// IPv6 routes have no scope: the kernel ignores the one HostRoute asks for
// and reports every IPv6 route as scope universe, so only IPv4 host routes
// are told by their scope.
func hostRouteAddr(r *netlink.Route) (netip.Addr, bool) {
	if r.Dst == nil || r.Gw != nil || (r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) {
		return netip.Addr{}, false
	}
	if r.Scope != netlink.SCOPE_LINK && (r.Dst.IP.To4() != nil || r.Scope != netlink.SCOPE_UNIVERSE) {
		return netip.Addr{}, false
	}
	ones, bits := r.Dst.Mask.Size()
	if ones != bits || bits == 0 {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	if a.BitLen() != bits {
		return netip.Addr{}, false
	}
	return a, true
}
