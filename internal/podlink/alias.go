package podlink

import (
	"strings"
)

// The alias of a host-side interface names its attachment and its pod:
//
//	trellis-v2 net=<network> cid=<containerID> if=<ifname> pod=<namespace>/<name> uid=<uid>
//
// pod= and uid= are present only when the runtime passed K8S_POD_NAMESPACE
// and K8S_POD_NAME (resp. K8S_POD_UID) in CNI_ARGS and the alias fits the
// kernel's limit (MaxAliasLen). Interfaces made by earlier plugin versions
// carry the older form trellis:<network>:<containerID>:<ifname>, which
// ParseAlias still reads (no pod). Neither form contains whitespace inside a
// value: CNI network names and container IDs, Linux interface names and
// Kubernetes object names cannot.
const (
	aliasV2 = "trellis-v2"
	aliasV1 = "trellis:"
)

// MaxAliasLen is the longest alias the kernel stores (IFALIASZ - 1).
const MaxAliasLen = 255

// Alias is the parsed alias of a host-side pod interface.
type Alias struct {
	Network     string
	ContainerID string
	IfName      string
	// PodNamespace and PodName name the pod, PodUID its UID; empty when the
	// runtime passed none or the interface predates pod names in aliases.
	PodNamespace string
	PodName      string
	PodUID       string
}

// Pod returns "namespace/name", or "" when the alias names no pod.
func (a Alias) Pod() string {
	if a.PodNamespace == "" || a.PodName == "" {
		return ""
	}
	return a.PodNamespace + "/" + a.PodName
}

// String formats a as the interface alias the plugin writes. When the full
// form exceeds MaxAliasLen the pod fields are left out (readers then pair
// the interface with its pod by address, as for old aliases).
func (a Alias) String() string {
	base := aliasV2 + " net=" + a.Network + " cid=" + a.ContainerID + " if=" + a.IfName
	if a.Pod() == "" || !clean(a.PodNamespace, a.PodName, a.PodUID) {
		return base
	}
	full := base + " pod=" + a.Pod()
	if a.PodUID != "" {
		full += " uid=" + a.PodUID
	}
	if len(full) > MaxAliasLen {
		return base
	}
	return full
}

// clean reports whether no value contains a separator of the format.
func clean(vals ...string) bool {
	for _, v := range vals {
		if strings.ContainsAny(v, " \t\n/=") {
			return false
		}
	}
	return true
}

// ParseAlias reads either alias form. ok is false for anything the plugin
// did not write (another owner's interface, a damaged alias).
func ParseAlias(s string) (Alias, bool) {
	if rest, ok := strings.CutPrefix(s, aliasV2+" "); ok {
		return parseV2(rest)
	}
	if rest, ok := strings.CutPrefix(s, aliasV1); ok {
		return parseV1(rest)
	}
	return Alias{}, false
}

func parseV2(rest string) (Alias, bool) {
	var a Alias
	seen := map[string]bool{}
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" || seen[k] {
			return Alias{}, false
		}
		seen[k] = true
		switch k {
		case "net":
			a.Network = v
		case "cid":
			a.ContainerID = v
		case "if":
			a.IfName = v
		case "pod":
			ns, name, ok := strings.Cut(v, "/")
			if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
				return Alias{}, false
			}
			a.PodNamespace, a.PodName = ns, name
		case "uid":
			a.PodUID = v
		default:
			// A field a later version added: ignore it.
		}
	}
	if a.Network == "" || a.ContainerID == "" || a.IfName == "" || (a.PodUID != "" && a.Pod() == "") {
		return Alias{}, false
	}
	return a, true
}

// parseV1 reads <network>:<containerID>:<ifname> (the ifname cannot hold a
// colon, the network name is everything before the first one).
func parseV1(rest string) (Alias, bool) {
	network, rest, ok := strings.Cut(rest, ":")
	i := strings.LastIndex(rest, ":")
	if !ok || i < 0 {
		return Alias{}, false
	}
	return Alias{Network: network, ContainerID: rest[:i], IfName: rest[i+1:]}, true
}
