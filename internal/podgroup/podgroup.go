// Package podgroup maps a pod's Kubernetes namespace to the network device
// group (`ip link set dev X group N`) the CNI plugin gives the pod's
// host-side interface at ADD. nftables matches it with `iifgroup` /
// `oifgroup`, so the agent's rules can tell which namespace a brand-new
// interface belongs to before the agent has seen the pod: a pending pod in
// a namespace without NetworkPolicies need not wait for the agent.
package podgroup

import "hash/fnv"

// Unknown is the group of an interface whose namespace the runtime did not
// pass (no K8S_POD_NAMESPACE in CNI_ARGS): the kernel's default group.
const Unknown uint32 = 0

// ForNamespace returns the device group for namespace ns: a 31-bit FNV-1a
// hash, never 0. Two namespaces may share a group; users must only ever let
// a collision make them more cautious (treat the pair as isolated).
func ForNamespace(ns string) uint32 {
	if ns == "" {
		return Unknown
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(ns))
	g := h.Sum32() & 0x7fffffff
	if g == 0 {
		g = 1
	}
	return g
}
