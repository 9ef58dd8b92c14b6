// Package policy compiles Kubernetes NetworkPolicies (networking.k8s.io/v1)
// into the desired content of Trellis's nftables table and applies it through
// a knftables.Interface in one transaction per sync. See docs/policy.md for
// the table layout and the reasoning behind it.
//
// Compile is pure: a Snapshot in, a Desired out, no side effects. Apply is
// the only function that talks to nftables.
package policy

import (
	"net/netip"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/trellisnet/trellis/internal/slim"
)

// Names of the table and its static objects.
const (
	TableName = "trellis-policy"

	ChainForward   = "forward"
	ChainInput     = "input"
	ChainAntiSpoof = "pod-antispoof"
	ChainEgress    = "pod-egress"
	ChainIngress   = "pod-ingress"

	SetPodIfaces = "pod-ifaces"
	// SetPodAddrs holds every pod address the agent knows (all nodes): a
	// pending interface using one is an address the agent has not caught up
	// with (reuse of a stale address), dropped until programmed.
	SetPodAddrs = "pod-addrs"
	// SetIngressIsolatedGroups / SetEgressIsolatedGroups hold the device
	// groups (podlink.GroupForNamespace) of namespaces where a policy of that
	// direction exists, plus group 0 (namespace unknown) when one exists
	// anywhere: pending interfaces in these groups are dropped.
	SetIngressIsolatedGroups = "ingress-isolated-groups"
	SetEgressIsolatedGroups  = "egress-isolated-groups"
	MapEgressPods            = "egress-pods"
	MapIngressPods           = "ingress-pods"

	// layoutVersion is mixed into group hashes: bump it when the rules a group
	// chain holds change, so old chains are replaced rather than reused.
	layoutVersion = "v2"
)

// Snapshot is everything the compiler needs, as plain data.
type Snapshot struct {
	// NodeName is the node this table is compiled for.
	NodeName   string
	Namespaces []Namespace
	Pods       []Pod
	Policies   []*networkingv1.NetworkPolicy
	// DenyLogGroup, when not 0, makes every drop also send the packet to
	// this nflog group with a prefix naming the direction, group and reason
	// ("trellis-deny ingress ing-…", "trellis-deny spoofed",
	// "trellis-deny pending …"); the interface in the log names the pod.
	DenyLogGroup uint16

	// partial: Pods holds only the pods that may differ from the snapshot
	// the same Compiler compiled last, every local pod among them, and
	// removed names the pods gone since (the controller's podView builds
	// such snapshots; see Compiler.compilePartial). Compile never takes one.
	partial bool
	removed []podKey
}

// Namespace is a namespace's name and labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Pod is what the compiler needs to know about one pod.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	// IPs are the pod's addresses; only IPv4 ones are used by this instance.
	IPs      []netip.Addr
	NodeName string
	// HostNetwork pods are never isolated and match peers only via ipBlock.
	HostNetwork bool
	// Interface is the host-side interface name (trl…) when the pod runs on
	// NodeName and the agent has found its interface; empty otherwise.
	Interface string
	Ports     []ContainerPort
	// src is the cached pod PodFromCache converted (nil for others): the
	// Compiler finds an unchanged pod by it without comparing it.
	src *slim.Pod
}

// ContainerPort is one container port of a pod: the agent's cached
// slim.Port, shared with its cache (only named ports are kept there).
type ContainerPort = slim.Port

// Desired is the complete content of the policy table.
type Desired struct {
	Chains map[string]*Chain
	Sets   map[string]*Set
	Maps   map[string]*Map
	// Counters are named counters (per group: <group>-allow, <group>-deny).
	Counters map[string]bool
	// Groups describes each group chain: which policies isolate its pods.
	Groups map[string]Group
}

// Group is one group chain: the pods sharing one allow list and one set of
// selecting policies, in one direction.
type Group struct {
	Direction string // "ingress" or "egress"
	// Policies are the "namespace/name" of the policies selecting the pods.
	Policies []string
	// AllowCounter and DenyCounter name the group's counters.
	AllowCounter, DenyCounter string
}

// Chain is one chain; Hook is empty for regular chains.
type Chain struct {
	Hook  string // "forward", "input" or ""
	Rules []string
	// Static chains are rewritten on every sync (flush + add in the same
	// transaction); non-static (group) chains are content-addressed and
	// written only when created.
	Static bool
}

// Set is one set; each element key is its list of concatenated fields.
type Set struct {
	Type     string
	Interval bool
	Elements [][]string
	// Group sets (those of group chains) hold ranges, which knftables cannot
	// list back: Apply diffs them element by element against the Desired it
	// committed last (ApplyOptions.Previous), checking their element count
	// in the kernel when it verifies, and rewrites them (flush and add,
	// atomically inside the transaction) when it has no previous state or
	// the count shows that someone else changed them.
	Group bool
	// delta, when set, is how the set differs from the one a Compiler
	// compiled before it.
	delta *setDelta
}

// Map is one map; Elements maps a key (fields joined by " . ") to a value.
type Map struct {
	Type     string
	Elements []MapElement
}

// MapElement is one key → value entry of a Map.
type MapElement struct {
	Key   []string
	Value string
}
