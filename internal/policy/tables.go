package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/podlink"
)

// policyKeys returns the sorted "namespace/name" of policies.
func policyKeys(pols []*networkingv1.NetworkPolicy) []string {
	out := make([]string, 0, len(pols))
	for _, np := range pols {
		out = append(out, np.Namespace+"/"+np.Name)
	}
	sort.Strings(out)
	return out
}

// DenyLogLimit bounds what one drop rule sends to the deny log: a flood
// of denied packets costs the node at most this many nflog messages per
// second per rule, the rest are dropped unlogged (and still counted).
const DenyLogLimit = "limit rate 20/second burst 40 packets"

// denyRules are the rules dropping what match selects (match may be ""),
// with a rate-limited nflog rule before the drop when logging is on. The
// limit must be a rule of its own: over the limit, a limit expression
// ends its rule, which must not skip the drop.
func denyRules(logGroup uint16, match, reason, counter string) []string {
	drop := "counter drop"
	if counter != "" {
		drop = "counter name " + quote(counter) + " drop"
	}
	join := func(stmt string) string {
		if match == "" {
			return stmt
		}
		return match + " " + stmt
	}
	if logGroup == 0 {
		return []string{join(drop)}
	}
	return []string{
		join(fmt.Sprintf("%s log prefix %s group %d", DenyLogLimit, quote("trellis-deny "+reason+": "), logGroup)),
		join(drop),
	}
}

// groupName names the group of a local pod in one direction: a hash of
// what its allow list is a function of (direction, the selecting
// policies, the pod's own resolution of their ingress named ports, the
// deny log), not of the allow list itself. Pods with the same name
// have the same allow list; when a peer set changes, the group keeps its
// name and only the changed elements of its sets are written.
func groupName(dir direction, policies, namedPorts []string, logGroup uint16) string {
	prefix := "ing-"
	if dir == egress {
		prefix = "eg-"
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\nlog %d\n", layoutVersion, prefix, logGroup)
	if logGroup != 0 {
		fmt.Fprintf(h, "log-limit %s\n", DenyLogLimit)
	}
	for _, p := range policies {
		fmt.Fprintf(h, "policy %s\n", p)
	}
	for _, n := range namedPorts {
		fmt.Fprintf(h, "port %s\n", n)
	}
	return prefix + hex.EncodeToString(h.Sum(nil))[:16]
}

// derivedGroupName is the i-th name derived from group name key, for a
// group whose own name another group inherited (Compiler.nameGroups): the
// same prefix and length.
func derivedGroupName(key string, i int) string {
	prefix, _, _ := strings.Cut(key, "-")
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s#%d", key, i)))
	return prefix + "-" + hex.EncodeToString(sum[:])[:16]
}

// namedPortsOf is how pod p resolves the named ports of pols' ingress rules
// ("name/proto=port", or "=none"), sorted: ingress named ports resolve on
// the selected pod, so pods resolving them differently need different
// groups. Egress named ports resolve on the peers: nil.
func namedPortsOf(p *Pod, dir direction, pols []*networkingv1.NetworkPolicy) []string {
	if dir != ingress {
		return nil
	}
	var out []string
	for _, np := range pols {
		for _, r := range np.Spec.Ingress {
			for _, pp := range r.Ports {
				if pp.Port == nil || pp.Port.Type != intstr.String {
					continue
				}
				proto, ok := protoNumber(pp.Protocol)
				if !ok {
					continue
				}
				v := "none"
				if n, ok := namedPort(p, pp.Port.StrVal, proto); ok {
					v = strconv.Itoa(int(n))
				}
				out = append(out, fmt.Sprintf("%s/%d=%s", pp.Port.StrVal, proto, v))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// newCachedGroup renders the chain, sets and counters of group name with
// allow list al.
func newCachedGroup(name string, dir direction, al allowList, policies []string, logGroup uint16) *cachedGroup {
	allElems := make([][]string, 0, len(al.all))
	for _, r := range al.all {
		allElems = append(allElems, []string{formatRange(r)})
	}
	portElems := make([][]string, 0, len(al.ports))
	for _, b := range al.ports {
		portElems = append(portElems, []string{formatRange(b.src), protoNames[b.proto], formatPorts(b.lo, b.hi)})
	}
	field, dirName := "ip saddr", "ingress"
	if dir == egress {
		field, dirName = "ip daddr", "egress"
	}
	allow, deny := name+"-allow", name+"-deny"
	return &cachedGroup{
		al:       al,
		group:    Group{Direction: dirName, Policies: policies, AllowCounter: allow, DenyCounter: deny},
		counters: [2]string{allow, deny},
		all:      &Set{Type: "ipv4_addr", Interval: true, Group: true, Elements: allElems},
		ports:    &Set{Type: "ipv4_addr . inet_proto . inet_service", Interval: true, Group: true, Elements: portElems},
		chain: &Chain{Rules: append([]string{
			field + " @" + name + "-all counter name " + quote(allow) + " return",
			field + " . meta l4proto . th dport @" + name + "-ports counter name " + quote(allow) + " return",
		}, denyRules(logGroup, "", dirName+" "+name, deny)...)},
	}
}

// addTo puts the group's objects into d.
func (g *cachedGroup) addTo(d *Desired, name string) {
	d.Counters[g.counters[0]], d.Counters[g.counters[1]] = true, true
	d.Groups[name] = g.group
	d.Sets[name+"-all"] = g.all
	d.Sets[name+"-ports"] = g.ports
	d.Chains[name] = g.chain
}

// AntiSpoofOnly is the table when NetworkPolicy enforcement is off: the
// same strict per-interface source check on every packet a pod sends, and
// no policy chains. Pods may then reach anything, but only with their own
// address.
func AntiSpoofOnly(logGroup uint16) *Desired {
	return &Desired{
		Chains: map[string]*Chain{
			ChainForward:   {Hook: "forward", Static: true, Rules: []string{antiSpoofJump}},
			ChainInput:     {Hook: "input", Static: true, Rules: []string{antiSpoofJump}},
			ChainAntiSpoof: antiSpoofChain(logGroup),
		},
		Sets: map[string]*Set{}, Maps: map[string]*Map{}, Counters: map[string]bool{}, Groups: map[string]Group{},
	}
}

// antiSpoofJump sends every packet from a pod interface, whatever its
// conntrack state, through the anti-spoofing chain.
const antiSpoofJump = `iifname "` + podlink.Wildcard + `" jump ` + ChainAntiSpoof

// antiSpoofChain is the strict reverse-path check: the plugin's /32 host
// route makes the route to a pod's address leave through exactly its own
// interface, so this holds for pending pods too.
func antiSpoofChain(logGroup uint16) *Chain {
	return &Chain{Static: true, Rules: append([]string{
		`meta nfproto ipv4 fib saddr . iif oif exists return`,
	}, denyRules(logGroup, "", "spoofed", "")...)}
}

// staticObjects returns the chains, sets and maps present in every table.
//
// A "pending" interface is a trl… device the agent has not programmed into
// pod-ifaces yet (a new pod, or any pod while the agent is down). Its
// device group (set by the plugin from the pod's namespace) decides its
// fate: dropped in a direction only when its group is in that direction's
// isolated-groups set, i.e. some policy could select it.
func staticObjects(logGroup uint16) *Desired {
	return &Desired{
		Chains: map[string]*Chain{
			ChainForward: {Hook: "forward", Static: true, Rules: []string{
				antiSpoofJump,
				`ct state established,related accept`,
				// Hairpin: a pod reaching itself (e.g. through its own
				// Service, DNATed back to it) is never subject to policy.
				`iifname "` + podlink.Wildcard + `" fib daddr . iif oif exists accept`,
				`iifname "` + podlink.Wildcard + `" jump ` + ChainEgress,
				`oifname "` + podlink.Wildcard + `" jump ` + ChainIngress,
			}},
			ChainInput: {Hook: "input", Static: true, Rules: []string{
				antiSpoofJump,
				`ct state established,related accept`,
				`iifname "` + podlink.Wildcard + `" jump ` + ChainEgress,
			}},
			ChainAntiSpoof: antiSpoofChain(logGroup),
			ChainEgress: {Static: true, Rules: slices.Concat([]string{
				`iifname vmap @` + MapEgressPods,
				`iifname . ip saddr @` + SetPodIfaces + ` return`},
				denyRules(logGroup, `ip saddr @`+SetPodAddrs, "pending known-address", ""),
				denyRules(logGroup, `iifgroup @`+SetEgressIsolatedGroups, "pending egress", ""),
			)},
			ChainIngress: {Static: true, Rules: slices.Concat([]string{
				`oifname vmap @` + MapIngressPods,
				`oifname . ip daddr @` + SetPodIfaces + ` return`},
				denyRules(logGroup, `ip daddr @`+SetPodAddrs, "pending known-address", ""),
				denyRules(logGroup, `oifgroup @`+SetIngressIsolatedGroups, "pending ingress", ""),
			)},
		},
		Sets: map[string]*Set{
			SetPodIfaces:             {Type: "ifname . ipv4_addr"},
			SetPodAddrs:              {Type: "ipv4_addr"},
			SetIngressIsolatedGroups: {Type: "devgroup"},
			SetEgressIsolatedGroups:  {Type: "devgroup"},
		},
		Maps: map[string]*Map{
			MapEgressPods:  {Type: "ifname : verdict"},
			MapIngressPods: {Type: "ifname : verdict"},
		},
		Counters: map[string]bool{},
		Groups:   map[string]Group{},
	}
}
