package policy

import (
	"net/netip"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/podlink"
)

// direction is ingress or egress.
type direction int

const (
	ingress direction = iota
	egress
)

// allowList is the exact set of peers/ports a pod may talk to in one direction.
type allowList struct {
	all   []ipRange // any protocol, any port
	ports []portBox // protocol + port range
}

// index holds the snapshot's lookups used throughout one compilation.
type index struct {
	snap     *Snapshot
	nsLabels map[string]labels.Set
	// pods are the addresses of the non-hostNetwork pods, one entry per
	// address (a dual-stack pod has two): the only pods that selectors can
	// match.
	pods []*podInfo
	// selectors caches converted label selectors by identity.
	selectors map[*metav1.LabelSelector]labels.Selector
	// peerCache caches a rule's peer addresses: they depend on the rule
	// only, not on the local pod being compiled.
	peerCache  map[peerKey][]ipRange
	namedCache map[namedKey][]portBox
	// comp, when set, keeps the rules' peers across compilations.
	comp *Compiler
}

type peerKey struct {
	np   *networkingv1.NetworkPolicy
	dir  direction
	rule int
	// peer is 0 for the whole rule (what Compile uses); Explain keys the
	// contribution of the rule's peer i alone as i+1.
	peer int
}

// podInfo is one address of a selectable pod.
type podInfo struct {
	pod *Pod
	ip  netip.Addr
}

// Compile computes the complete desired content of the policy table for
// snap.NodeName. It has no side effects. (The controller keeps a Compiler,
// which gives the same result reusing its previous work.)
func Compile(snap *Snapshot) *Desired {
	return NewCompiler().Compile(snap)
}

// addIsolatedGroups fills, per direction, the device groups of namespaces
// that some policy of that direction could select a new pod in (with
// pod-addrs, the sets that decide the fate of pending interfaces).
func addIsolatedGroups(d *Desired, ix *index) {
	for _, dir := range []direction{ingress, egress} {
		set := d.Sets[SetIngressIsolatedGroups]
		if dir == egress {
			set = d.Sets[SetEgressIsolatedGroups]
		}
		gs := ix.isolatedGroups(dir)
		keys := make([]uint32, 0, len(gs))
		for g := range gs {
			keys = append(keys, g)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
		for _, g := range keys {
			set.Elements = append(set.Elements, []string{strconv.FormatUint(uint64(g), 10)})
		}
	}
}

// isolatedGroups are the device groups whose pending interfaces are
// dropped in dir: the namespaces holding a policy of that direction, plus
// GroupUnknown when there is one anywhere.
func (ix *index) isolatedGroups(dir direction) map[uint32]bool {
	gs := map[uint32]bool{}
	for _, np := range ix.snap.Policies {
		if in, eg := policyTypes(np); (dir == ingress && in) || (dir == egress && eg) {
			gs[podlink.GroupForNamespace(np.Namespace)] = true
			gs[podlink.GroupUnknown] = true
		}
	}
	return gs
}

// localPods are the pods the table enforces for: non-hostNetwork pods of
// this node with an address (of either family) and a known interface. An interface
// claimed by several pods goes to the first (the caller resolves such
// conflicts; see dedupeByIP), so the table never holds conflicting keys.
func localPods(snap *Snapshot) []*Pod {
	var out []*Pod
	seen := map[string]bool{}
	for i := range snap.Pods {
		p := &snap.Pods[i]
		if len(p.IPs) == 0 || p.HostNetwork || p.NodeName != snap.NodeName || p.Interface == "" || seen[p.Interface] {
			continue
		}
		seen[p.Interface] = true
		out = append(out, p)
	}
	return out
}

func newIndex(snap *Snapshot) *index {
	ix := &index{snap: snap, nsLabels: map[string]labels.Set{},
		selectors: map[*metav1.LabelSelector]labels.Selector{}, peerCache: map[peerKey][]ipRange{},
		namedCache: map[namedKey][]portBox{}}
	for _, ns := range snap.Namespaces {
		ix.nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	for i := range snap.Pods {
		p := &snap.Pods[i]
		if p.HostNetwork {
			continue
		}
		for _, a := range p.IPs {
			ix.pods = append(ix.pods, &podInfo{pod: p, ip: a})
		}
	}
	return ix
}

func quote(s string) string { return `"` + s + `"` }

// policyTypes applies the API's defaulting: Ingress always when unset,
// Egress when unset and the policy has egress rules.
func policyTypes(np *networkingv1.NetworkPolicy) (bool, bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0
	}
	var in, out bool
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			in = true
		case networkingv1.PolicyTypeEgress:
			out = true
		}
	}
	return in, out
}

// selector converts a label selector; nil means "nothing" here and callers
// handle the nil cases the API gives a meaning to. An invalid selector
// selects nothing.
func selector(ls *metav1.LabelSelector) labels.Selector {
	if ls == nil {
		return labels.Nothing()
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return labels.Nothing()
	}
	return s
}

// sel is selector() cached by identity for the compilation.
func (ix *index) sel(ls *metav1.LabelSelector) labels.Selector {
	if s, ok := ix.selectors[ls]; ok {
		return s
	}
	s := selector(ls)
	ix.selectors[ls] = s
	return s
}

func (ix *index) selectingPolicies(p *Pod, dir direction) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, np := range ix.snap.Policies {
		if np.Namespace != p.Namespace {
			continue
		}
		in, eg := policyTypes(np)
		if (dir == ingress && !in) || (dir == egress && !eg) {
			continue
		}
		if ix.sel(&np.Spec.PodSelector).Matches(labels.Set(p.Labels)) {
			out = append(out, np)
		}
	}
	return out
}

// allowFor computes the allow list of pod p (local, isolated) in dir.
func (ix *index) allowFor(p *Pod, dir direction, pols []*networkingv1.NetworkPolicy) allowList {
	var al allowList
	for _, np := range pols {
		if dir == ingress {
			for i, r := range np.Spec.Ingress {
				ix.addRule(&al, peerKey{np: np, dir: dir, rule: i}, r.From, r.Ports, p)
			}
		} else {
			for i, r := range np.Spec.Egress {
				ix.addRule(&al, peerKey{np: np, dir: dir, rule: i}, r.To, r.Ports, p)
			}
		}
	}
	al.all = mergeRanges(al.all)
	al.ports = disjointBoxes(al.ports)
	return al
}

// cachedPeers returns the addresses a rule's peers admit, computed once per
// rule and compilation.
func (ix *index) cachedPeers(k peerKey, peers []networkingv1.NetworkPolicyPeer) []ipRange {
	if r, ok := ix.peerCache[k]; ok {
		return r
	}
	if ix.comp != nil && k.peer == 0 {
		r := ix.comp.rule(ix, k, peers).ranges
		ix.peerCache[k] = r
		return r
	}
	r := ix.peerRanges(k.np.Namespace, peers)
	ix.peerCache[k] = r
	return r
}

// addRule adds the contribution of one ingress/egress rule (identified by
// k) for local pod p.
func (ix *index) addRule(al *allowList, k peerKey, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort, p *Pod) {
	peerRanges := ix.cachedPeers(k, peers)
	addRuleRanges(al, k, peerRanges, ports, p, func(name string, proto uint8) []portBox {
		return ix.namedPortBoxes(k, peerRanges, name, proto)
	})
}

// addRuleRanges adds the contribution of one rule whose peers admit
// peerRanges; named resolves a named egress port on the peers.
func addRuleRanges(al *allowList, k peerKey, peerRanges []ipRange, ports []networkingv1.NetworkPolicyPort, p *Pod,
	named func(name string, proto uint8) []portBox) {
	if len(ports) == 0 {
		al.all = append(al.all, peerRanges...)
		return
	}
	for _, pp := range ports {
		proto, ok := protoNumber(pp.Protocol)
		if !ok {
			continue
		}
		switch {
		case pp.Port == nil:
			al.ports = appendBoxes(al.ports, peerRanges, proto, 0, 65535)
		case pp.Port.Type == intstr.Int:
			lo, hi := pp.Port.IntVal, pp.Port.IntVal
			if pp.EndPort != nil {
				hi = *pp.EndPort
			}
			if lo < 0 || hi > 65535 || hi < lo {
				continue // invalid (the API rejects it): admits nothing
			}
			al.ports = appendBoxes(al.ports, peerRanges, proto, uint16(lo), uint16(hi))
		case k.dir == ingress: // named port, resolved on the selected pod
			if n, ok := namedPort(p, pp.Port.StrVal, proto); ok {
				al.ports = appendBoxes(al.ports, peerRanges, proto, n, n)
			}
		default: // named port on egress, resolved on each destination pod
			al.ports = append(al.ports, named(pp.Port.StrVal, proto)...)
		}
	}
}

// namedPortBoxes resolves a named port on every pod admitted by a rule's
// peers (peerRanges holds the /32 of every selected pod and the ipBlocks,
// so membership is exactly "the pod matches a peer"). Cached per rule.
func (ix *index) namedPortBoxes(pk peerKey, peerRanges []ipRange, name string, proto uint8) []portBox {
	k := namedKey{rule: pk, name: name, proto: proto}
	if b, ok := ix.namedCache[k]; ok {
		return b
	}
	var r *ruleState
	if ix.comp != nil && pk.peer == 0 {
		if r = ix.comp.rules[pk]; r != nil {
			if b, ok := r.named[k]; ok {
				return b
			}
		}
	}
	var out []portBox
	for _, q := range ix.podList() {
		if !inRanges(peerRanges, q.ip) {
			continue
		}
		if n, ok := namedPort(q.pod, name, proto); ok {
			out = append(out, portBox{src: ipRange{q.ip, q.ip}, proto: proto, lo: n, hi: n})
		}
	}
	ix.namedCache[k] = out
	if r != nil {
		if r.named == nil {
			r.named = map[namedKey][]portBox{}
		}
		r.named[k] = out
	}
	return out
}

// namedKey identifies a rule plus a port name and protocol.
type namedKey struct {
	rule  peerKey
	name  string
	proto uint8
}

func appendBoxes(out []portBox, rs []ipRange, proto uint8, lo, hi uint16) []portBox {
	for _, r := range rs {
		out = append(out, portBox{src: r, proto: proto, lo: lo, hi: hi})
	}
	return out
}

// inRanges reports whether ip is in rs (sorted and disjoint).
func inRanges(rs []ipRange, ip netip.Addr) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi.Compare(ip) >= 0 })
	return i < len(rs) && rs[i].lo.Compare(ip) <= 0
}

func protoNumber(p *corev1.Protocol) (uint8, bool) {
	if p == nil {
		return 6, true
	}
	switch *p {
	case corev1.ProtocolTCP:
		return 6, true
	case corev1.ProtocolUDP:
		return 17, true
	case corev1.ProtocolSCTP:
		return 132, true
	}
	return 0, false
}

func namedPort(p *Pod, name string, proto uint8) (uint16, bool) {
	for _, cp := range p.Ports {
		if cp.Name != name {
			continue
		}
		cpProto := corev1.ProtocolTCP
		if cp.Protocol != "" {
			cpProto = cp.Protocol
		}
		if n, ok := protoNumber(&cpProto); ok && n == proto {
			return uint16(cp.Port), true
		}
	}
	return 0, false
}

// peerRanges returns the union of the addresses a rule's peers admit (a
// pod a selector matches with every address it has). An empty peer list
// admits every address of both families.
func (ix *index) peerRanges(ns string, peers []networkingv1.NetworkPolicyPeer) []ipRange {
	if len(peers) == 0 {
		return allAddrs()
	}
	var out []ipRange
	for i := range peers {
		peer := &peers[i]
		if peer.IPBlock != nil {
			out = append(out, ipBlockRanges(peer.IPBlock)...)
			continue
		}
		for _, q := range ix.pods {
			if ix.podMatchesPeer(ns, peer, q) {
				out = append(out, ipRange{q.ip, q.ip})
			}
		}
	}
	return mergeRanges(out)
}

func (ix *index) podMatchesPeer(ns string, peer *networkingv1.NetworkPolicyPeer, q *podInfo) bool {
	if peer.NamespaceSelector == nil && peer.PodSelector == nil {
		return false
	}
	if peer.NamespaceSelector == nil {
		if q.pod.Namespace != ns {
			return false
		}
	} else if !ix.sel(peer.NamespaceSelector).Matches(ix.nsLabels[q.pod.Namespace]) {
		return false
	}
	if peer.PodSelector == nil {
		return true
	}
	return ix.sel(peer.PodSelector).Matches(labels.Set(q.pod.Labels))
}

// ipBlockRanges is cidr minus except, in the cidr's family (an IPv6 block
// admits no IPv4 address and the reverse; an except of the other family
// removes nothing); a block with an unparsable cidr or except admits
// nothing (an except that cannot be read must not widen what the block
// admits).
func ipBlockRanges(b *networkingv1.IPBlock) []ipRange {
	p, err := parsePrefix(b.CIDR)
	if err != nil {
		return nil
	}
	out := []ipRange{prefixRange(p)}
	for _, e := range b.Except {
		ep, err := parsePrefix(e)
		if err != nil {
			return nil
		}
		out = subtract(out, prefixRange(ep))
	}
	return out
}

// sortedKeys returns a map's keys in order (deterministic transactions).
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
