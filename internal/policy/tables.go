package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"

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

// addGroup adds the chain, sets and counters of one group (content-addressed
// by direction, allow list and selecting policies) and returns its name.
func addGroup(d *Desired, dir direction, al allowList, policies []string, logGroup uint16, seen map[string]bool) string {
	allElems := make([][]string, 0, len(al.all))
	for _, r := range al.all {
		allElems = append(allElems, []string{formatRange(r)})
	}
	portElems := make([][]string, 0, len(al.ports))
	for _, b := range al.ports {
		portElems = append(portElems, []string{formatRange(b.src), protoNames[b.proto], formatPorts(b.lo, b.hi)})
	}
	prefix, field, dirName := "ing-", "ip saddr", "ingress"
	if dir == egress {
		prefix, field, dirName = "eg-", "ip daddr", "egress"
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\nlog %d\n", layoutVersion, prefix, logGroup)
	if logGroup != 0 {
		fmt.Fprintf(h, "log-limit %s\n", DenyLogLimit)
	}
	for _, p := range policies {
		fmt.Fprintf(h, "policy %s\n", p)
	}
	for _, e := range allElems {
		fmt.Fprintf(h, "a %s\n", strings.Join(e, " . "))
	}
	for _, e := range portElems {
		fmt.Fprintf(h, "p %s\n", strings.Join(e, " . "))
	}
	name := prefix + hex.EncodeToString(h.Sum(nil))[:16]
	if seen[name] {
		return name
	}
	seen[name] = true
	allow, deny := name+"-allow", name+"-deny"
	d.Counters[allow], d.Counters[deny] = true, true
	d.Groups[name] = Group{Direction: dirName, Policies: policies, AllowCounter: allow, DenyCounter: deny}
	d.Sets[name+"-all"] = &Set{Type: "ipv4_addr", Interval: true, ContentAddressed: true, Elements: allElems}
	d.Sets[name+"-ports"] = &Set{Type: "ipv4_addr . inet_proto . inet_service", Interval: true, ContentAddressed: true, Elements: portElems}
	d.Chains[name] = &Chain{Rules: append([]string{
		field + " @" + name + "-all counter name " + quote(allow) + " return",
		field + " . meta l4proto . th dport @" + name + "-ports counter name " + quote(allow) + " return",
	}, denyRules(logGroup, "", dirName+" "+name, deny)...)}
	return name
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
