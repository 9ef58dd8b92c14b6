package policy

import (
	"maps"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/slim"
)

// Compiler compiles one snapshot after another for one node, and reuses
// what the previous compilation computed for what did not change: the
// addresses each policy rule's peers admit (updated for the pods that
// changed, not recomputed over every pod), the allow list of every group
// whose rules admit the same addresses as before, the converted label
// selectors, and the element lists of unchanged sets (the same *Set, so
// ApplyWith skips them). Its output always equals Compile's on the same
// snapshot.
//
// The objects of a snapshot must not be modified in place between two
// compilations (informer objects never are): policies are recognised by
// pointer, pods by namespace/name and content.
type Compiler struct {
	pods      map[podKey]*podState
	nsLabels  map[string]labels.Set
	policies  []*networkingv1.NetworkPolicy
	selectors map[*metav1.LabelSelector]labels.Selector
	rules     map[peerKey]*ruleState
	groups    map[string]*cachedGroup
	podAddrs  *Set
	addrs     map[uint32]*podState   // pod-addrs: every selectable pod address, and a pod holding it
	addrMore  map[uint32][]*podState // the other pods holding an address (stale objects, rare)
	addrOrder []uint32               // addrs' keys, sorted
	// prevNames is the group each local pod's interface was in, per
	// direction ("ing"/"eg-" prefix + interface), at the last compilation.
	prevNames map[string]string
	logGroup  uint16
	ready     bool
	version   uint64 // last rule version handed out
	gen       uint64 // compilations so far
	seq       uint64 // updates so far
}

// NewCompiler returns a Compiler with nothing cached.
func NewCompiler() *Compiler { return &Compiler{} }

type podKey struct{ ns, name string }

// podState is a pod as the last compilation saw it: the cached pod it
// was converted from (or, for a snapshot built otherwise, a copy) and its
// interface. Kept small: there is one per pod of the cluster.
type podState struct {
	src  *slim.Pod
	own  *Pod   // when src is nil, or the pod has an interface (local pods)
	ip   uint32 // its IPv4 address, when ok
	ok   bool   // non-hostNetwork with an IPv4 address: selectors can match it
	seen uint64 // the last update that saw it
}

// view is the pod as the compiler reads it.
func (st *podState) view() Pod {
	if st.own != nil {
		return *st.own
	}
	return PodFromCache(st.src, "")
}

// iface is the pod's interface ("" unless local).
func (st *podState) iface() string {
	if st.own != nil {
		return st.own.Interface
	}
	return ""
}

// ruleState is what one rule's peers admit, kept up to date across
// compilations.
type ruleState struct {
	blocks  []ipRange // what the rule's ipBlocks admit
	ranges  []ipRange // merged blocks and the pods a selector peer matches: what the rule admits
	version uint64    // bumped whenever ranges or an admitted pod changed
	// prevVersion, changed and changedGen: the version before the
	// compilation changedGen changed the rule, at the addresses changed.
	prevVersion uint64
	changed     []uint32
	changedGen  uint64
	named       map[namedKey][]portBox
	peers       []networkingv1.NetworkPolicyPeer
	ns          string
	used        bool
	// peerPorts: the rule has named ports resolved on its peers (egress),
	// so any pod it admits matters, through an ipBlock too.
	peerPorts bool
}

// cachedGroup is a group's compiled content and the rule versions it was
// computed from.
type cachedGroup struct {
	key      string // what the group is (groupName of its dependencies); its kernel name may be another
	al       allowList
	deps     []ruleDep
	all      *Set
	ports    *Set
	chain    *Chain
	group    Group
	counters [2]string
	used     bool
}

type ruleDep struct {
	key     peerKey
	version uint64
}

// setDelta says that a set equals base with add added and del deleted:
// ApplyWith writes just that when base is what the kernel holds.
type setDelta struct {
	base     *Set
	add, del [][]string
}

// podChange is one pod that differs from the last compilation (old or
// new is nil when it appeared or went).
type podChange struct{ old, new *podState }

// Compile computes the complete desired content of the policy table for
// snap.NodeName, as the package's Compile does.
func (c *Compiler) Compile(snap *Snapshot) *Desired {
	if snap.partial {
		// Only the controller builds partial snapshots, through compilePartial.
		full := *snap
		full.partial, full.removed = false, nil
		snap = &full
	}
	changes, ok := c.update(snap)
	if !ok {
		*c = Compiler{}
		changes, _ = c.update(snap)
	}
	return c.compile(snap, changes)
}

// compilePartial compiles a partial snapshot (Snapshot.partial): only the
// pods it names are compared with what the last compilation saw. It
// reports false, compiling nothing, when a partial snapshot is not enough:
// nothing was compiled before, or what every pod's matching depends on
// changed (namespace labels, the deny log group); the caller then
// compiles a complete snapshot.
func (c *Compiler) compilePartial(snap *Snapshot) (*Desired, bool) {
	if !c.ready || snap.DenyLogGroup != c.logGroup || !sameNamespaceLabels(snap.Namespaces, c.nsLabels) {
		return nil, false
	}
	changes, ok := c.update(snap)
	if !ok {
		*c = Compiler{}
		return nil, false
	}
	return c.compile(snap, changes), true
}

// sameNamespaceLabels reports whether nss carry exactly the labels of have.
func sameNamespaceLabels(nss []Namespace, have map[string]labels.Set) bool {
	if len(nss) != len(have) {
		return false
	}
	for _, ns := range nss {
		l, ok := have[ns.Name]
		if !ok || !maps.Equal(l, labels.Set(ns.Labels)) {
			return false
		}
	}
	return true
}

// compile computes the table from the updated state and the pods that changed.
func (c *Compiler) compile(snap *Snapshot, changes []podChange) *Desired {
	c.gen++
	ix := &index{snap: snap, nsLabels: c.nsLabels, selectors: c.selectors, comp: c,
		peerCache: map[peerKey][]ipRange{}, namedCache: map[namedKey][]portBox{}}
	d := staticObjects(snap.DenyLogGroup)
	d.Sets[SetPodAddrs] = c.podAddrSet(changes) // first: the rules read c.addrs
	c.updateRules(ix, changes)
	addIsolatedGroups(d, ix)
	for _, g := range c.groups {
		g.used = false
	}
	seenGroups := map[string]bool{}
	type membership struct {
		p    *Pod
		dir  direction
		pols []*networkingv1.NetworkPolicy
		key  string
	}
	var members []membership
	byKey := map[string][]string{}
	for _, p := range localPods(snap) {
		ip, _ := firstIPv4(p)
		d.Sets[SetPodIfaces].Elements = append(d.Sets[SetPodIfaces].Elements,
			[]string{quote(p.Interface), u32ToAddr(ip).String()})
		for _, dir := range []direction{ingress, egress} {
			pols := ix.selectingPolicies(p, dir)
			if len(pols) == 0 {
				continue
			}
			key := groupName(dir, policyKeys(pols), namedPortsOf(p, dir, pols), ix.snap.DenyLogGroup)
			members = append(members, membership{p: p, dir: dir, pols: pols, key: key})
			byKey[key] = append(byKey[key], p.Interface)
		}
	}
	names := c.nameGroups(byKey)
	prevNames := make(map[string]string, len(members))
	for _, mb := range members {
		p, dir := mb.p, mb.dir
		name := c.group(d, ix, p, dir, mb.pols, mb.key, names[mb.key], seenGroups)
		prevNames[mb.key[:3]+p.Interface] = name
		m := MapIngressPods
		if dir == egress {
			m = MapEgressPods
		}
		d.Maps[m].Elements = append(d.Maps[m].Elements, MapElement{Key: []string{quote(p.Interface)}, Value: "goto " + name})
	}
	c.prevNames = prevNames
	maps.DeleteFunc(c.groups, func(_ string, g *cachedGroup) bool { return !g.used })
	maps.DeleteFunc(c.rules, func(_ peerKey, r *ruleState) bool { return !r.used })
	for _, r := range c.rules {
		r.used = false
	}
	c.ready = true
	return d
}

// update records snap's namespaces, policies and pods, and returns the pods
// that changed. It reports false when the snapshot names a pod twice (the
// caller then starts afresh, where nothing is compared).
func (c *Compiler) update(snap *Snapshot) ([]podChange, bool) {
	nsLabels := make(map[string]labels.Set, len(snap.Namespaces))
	for _, ns := range snap.Namespaces {
		nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	if !c.ready || snap.DenyLogGroup != c.logGroup || !maps.EqualFunc(nsLabels, c.nsLabels, func(a, b labels.Set) bool { return maps.Equal(a, b) }) {
		// Namespace labels feed every namespaceSelector: start afresh.
		*c = Compiler{}
	}
	c.nsLabels, c.logGroup = nsLabels, snap.DenyLogGroup
	if c.pods == nil {
		c.pods, c.rules, c.groups = map[podKey]*podState{}, map[peerKey]*ruleState{}, map[string]*cachedGroup{}
	}
	// Selectors of policies no longer present are dropped.
	if !slices.Equal(c.policies, snap.Policies) || c.selectors == nil {
		sels := map[*metav1.LabelSelector]labels.Selector{}
		for _, np := range snap.Policies {
			for _, ls := range policySelectors(np) {
				if s, ok := c.selectors[ls]; ok {
					sels[ls] = s
				}
			}
		}
		c.selectors = sels
		c.policies = slices.Clone(snap.Policies)
	}
	c.seq++
	var changes []podChange
	for i := range snap.Pods {
		p := &snap.Pods[i]
		k := podKey{p.Namespace, p.Name}
		old := c.pods[k]
		if old != nil && old.seen == c.seq {
			return nil, false
		}
		if old != nil && ((p.src != nil && old.src == p.src && old.iface() == p.Interface) || samePod(old.view(), p)) {
			old.seen = c.seq
			if p.src != nil {
				old.src = p.src // the object last seen (podView.prev)
			}
			continue
		}
		st := newPodState(p, c.seq)
		c.pods[k] = st
		changes = append(changes, podChange{old: old, new: st})
	}
	if snap.partial {
		for _, k := range snap.removed {
			if st := c.pods[k]; st != nil && st.seen != c.seq {
				delete(c.pods, k)
				changes = append(changes, podChange{old: st})
			}
		}
		return changes, true
	}
	if len(c.pods) == len(snap.Pods) {
		return changes, true // every pod known was seen: none went
	}
	for k, st := range c.pods {
		if st.seen != c.seq {
			delete(c.pods, k)
			changes = append(changes, podChange{old: st})
		}
	}
	return changes, true
}

func newPodState(p *Pod, seq uint64) *podState {
	st := &podState{src: p.src, seen: seq}
	if p.src == nil || p.Interface != "" {
		cp := *p
		st.own = &cp
	}
	if ip, ok := firstIPv4(p); ok && !p.HostNetwork {
		st.ok, st.ip = true, ip
	}
	return st
}

// samePod reports whether a and b compile alike.
func samePod(a Pod, b *Pod) bool {
	return a.NodeName == b.NodeName && a.HostNetwork == b.HostNetwork && a.Interface == b.Interface &&
		slices.Equal(a.IPs, b.IPs) && slices.Equal(a.Ports, b.Ports) && maps.Equal(a.Labels, b.Labels)
}

// updateRules brings every cached rule up to date with the changed pods:
// a rule one of whose selector peers matched or matches a changed pod, or
// whose ranges held or hold its address, gets a new version.
func (c *Compiler) updateRules(ix *index, changes []podChange) {
	if len(changes) == 0 {
		return
	}
	for _, r := range c.rules {
		var touched, moved []uint32
		for _, ch := range changes {
			for _, st := range []*podState{ch.old, ch.new} {
				if st == nil || !st.ok {
					continue
				}
				ip, v := st.ip, st.view()
				matches := ix.ruleMatches(r, &podInfo{pod: &v, ip: ip})
				if matches {
					moved = append(moved, ip)
				}
				if matches || (r.peerPorts && inRanges(r.ranges, ip)) {
					touched = append(touched, ip)
				}
			}
		}
		for _, ip := range moved {
			r.ranges = setPoint(r.ranges, ip, inRanges(r.blocks, ip) || c.anyMatches(ix, r, ip))
		}
		if len(touched) > 0 {
			c.version++
			r.prevVersion, r.version = r.version, c.version
			r.changed, r.changedGen = touched, c.gen
			r.named = nil
		}
	}
}

// ruleMatches reports whether one of r's selector peers matches q.
func (ix *index) ruleMatches(r *ruleState, q *podInfo) bool {
	for i := range r.peers {
		if r.peers[i].IPBlock == nil && ix.podMatchesPeer(r.ns, &r.peers[i], q) {
			return true
		}
	}
	return false
}

// anyMatches reports whether a pod holding ip now matches one of r's
// selector peers.
func (c *Compiler) anyMatches(ix *index, r *ruleState, ip uint32) bool {
	for _, st := range c.podsAt(ip) {
		v := st.view()
		if ix.ruleMatches(r, &podInfo{pod: &v, ip: ip}) {
			return true
		}
	}
	return false
}

// rule returns the state of rule k, computing it over every pod when it is
// new.
func (c *Compiler) rule(ix *index, k peerKey, peers []networkingv1.NetworkPolicyPeer) *ruleState {
	if r, ok := c.rules[k]; ok {
		r.used = true
		return r
	}
	r := &ruleState{peers: peers, ns: k.np.Namespace, used: true,
		peerPorts: k.dir == egress && hasNamedPort(k.np.Spec.Egress[k.rule].Ports)}
	if len(peers) == 0 {
		r.blocks = []ipRange{allIPv4}
	}
	for i := range peers {
		if peers[i].IPBlock != nil {
			r.blocks = append(r.blocks, ipBlockRanges(peers[i].IPBlock)...)
		}
	}
	rs := slices.Clone(r.blocks)
	for _, q := range ix.podList() {
		if ix.ruleMatches(r, q) {
			rs = append(rs, ipRange{q.ip, q.ip})
		}
	}
	r.ranges = mergeRanges(rs)
	c.version++
	r.version = c.version
	c.rules[k] = r
	return r
}

// podAddrSet is the pod-addrs set (every selectable pod address, sorted):
// the previous one when no address came or went, else a new one that
// records its difference from the previous one.
func (c *Compiler) podAddrSet(changes []podChange) *Set {
	if c.addrs == nil {
		c.addrs, c.addrMore = map[uint32]*podState{}, map[uint32][]*podState{}
	}
	var add, del []uint32
	for _, ch := range changes {
		if old := ch.old; old != nil && old.ok && c.removeAddr(old) {
			del = append(del, old.ip)
		}
		if st := ch.new; st != nil && st.ok && c.addAddr(st) {
			add = append(add, st.ip)
		}
	}
	if c.podAddrs != nil && len(add) == 0 && len(del) == 0 {
		return c.podAddrs
	}
	// An address may have gone and come back within the changes.
	net := map[uint32]int{}
	for _, ip := range add {
		net[ip]++
	}
	for _, ip := range del {
		net[ip]--
	}
	elem := func(ip uint32) []string { return []string{u32ToAddr(ip).String()} }
	s := &Set{Type: "ipv4_addr"}
	if len(net) > 64 || c.podAddrs == nil {
		c.addrOrder = slices.Sorted(maps.Keys(c.addrs))
		s.Elements = make([][]string, 0, len(c.addrOrder))
		for _, ip := range c.addrOrder {
			s.Elements = append(s.Elements, elem(ip))
		}
		c.podAddrs = s
		return s
	}
	// The elements are kept in the order of addrOrder: splice both.
	delta := &setDelta{base: c.podAddrs}
	c.podAddrs.delta = nil // one step back is all ApplyWith uses: no chain of old sets
	s.Elements = slices.Clone(c.podAddrs.Elements)
	for _, ip := range slices.Sorted(maps.Keys(net)) {
		i, found := slices.BinarySearch(c.addrOrder, ip)
		switch n := net[ip]; {
		case n > 0 && !found:
			e := elem(ip)
			delta.add = append(delta.add, e)
			c.addrOrder = slices.Insert(c.addrOrder, i, ip)
			s.Elements = slices.Insert(s.Elements, i, e)
		case n < 0 && found:
			delta.del = append(delta.del, s.Elements[i])
			c.addrOrder = slices.Delete(c.addrOrder, i, i+1)
			s.Elements = slices.Delete(s.Elements, i, i+1)
		}
	}
	s.delta = delta
	c.podAddrs = s
	return s
}

// podsAt are the pods holding ip.
func (c *Compiler) podsAt(ip uint32) []*podState {
	st := c.addrs[ip]
	if st == nil {
		return nil
	}
	return append([]*podState{st}, c.addrMore[ip]...)
}

// addAddr records that st holds its address, and reports whether the
// address is new.
func (c *Compiler) addAddr(st *podState) bool {
	if c.addrs[st.ip] == nil {
		c.addrs[st.ip] = st
		return true
	}
	c.addrMore[st.ip] = append(c.addrMore[st.ip], st)
	return false
}

// removeAddr forgets that st holds its address, and reports whether no
// pod holds it any more.
func (c *Compiler) removeAddr(st *podState) bool {
	more := c.addrMore[st.ip]
	if c.addrs[st.ip] == st {
		if len(more) == 0 {
			delete(c.addrs, st.ip)
			return true
		}
		c.addrs[st.ip], more = more[0], more[1:]
	} else {
		more = slices.DeleteFunc(more, func(o *podState) bool { return o == st })
	}
	if len(more) == 0 {
		delete(c.addrMore, st.ip)
	} else {
		c.addrMore[st.ip] = more
	}
	return false
}

// group adds the group of local pod p in dir to d (computing its allow
// list only when it is new or one of its rules changed) and returns its
// name.
func (c *Compiler) group(d *Desired, ix *index, p *Pod, dir direction, pols []*networkingv1.NetworkPolicy, key, name string, seen map[string]bool) string {
	keys := policyKeys(pols)
	if seen[name] {
		return name
	}
	seen[name] = true
	deps := ruleDeps(ix, dir, pols)
	g := c.groups[name]
	if g != nil && g.key != key {
		g = nil // the name now holds another group's content: computed afresh, written as a difference
	}
	if g != nil && !slices.Equal(g.deps, deps) {
		if xs, ok := c.changedSince(g.deps, deps); ok {
			al, delAll, addAll, delBox, addBox := ix.updatedAt(g.al, p, dir, pols, xs)
			ng := newCachedGroup(name, dir, al, keys, ix.snap.DenyLogGroup)
			ng.all.delta = netDelta(g.all, rangeElems(delAll), rangeElems(addAll))
			ng.ports.delta = netDelta(g.ports, boxElems(delBox), boxElems(addBox))
			ng.deps, ng.key = deps, key
			c.groups[name] = ng
			g = ng
		} else {
			g = nil
		}
	}
	if g == nil {
		al := ix.allowFor(p, dir, pols)
		g = newCachedGroup(name, dir, al, keys, ix.snap.DenyLogGroup)
		g.deps = ruleDeps(ix, dir, pols) // allowFor may have created rules
		g.key = key
		c.groups[name] = g
	}
	g.used = true
	g.addTo(d, name)
	return name
}

// nameGroups gives each group (by its key, groupName of what it depends
// on) its name in the kernel: the name most of its pods' interfaces were in
// at the last compilation, when no other group took it first, so that a
// policy created or deleted, or a pod joining or leaving a group, changes
// the group's sets element by element instead of writing a renamed group
// whole; else its key (what Compile, with no history, always uses), or,
// when another group inherited that, a name derived from it.
func (c *Compiler) nameGroups(byKey map[string][]string) map[string]string {
	names := make(map[string]string, len(byKey))
	taken := map[string]bool{}
	keys := slices.Sorted(maps.Keys(byKey))
	if len(c.prevNames) > 0 {
		for _, key := range keys {
			votes := map[string]int{}
			for _, iface := range byKey[key] {
				if n, ok := c.prevNames[key[:3]+iface]; ok && !taken[n] {
					votes[n]++
				}
			}
			best := ""
			for n, v := range votes {
				if best == "" || v > votes[best] || (v == votes[best] && n < best) {
					best = n
				}
			}
			if best != "" {
				names[key], taken[best] = best, true
			}
		}
	}
	for _, key := range keys {
		if _, ok := names[key]; ok {
			continue
		}
		n := key
		for i := 2; taken[n]; i++ {
			n = derivedGroupName(key, i)
		}
		names[key], taken[n] = n, true
	}
	return names
}

func hasNamedPort(ports []networkingv1.NetworkPolicyPort) bool {
	for _, p := range ports {
		if p.Port != nil && p.Port.Type == intstr.String {
			return true
		}
	}
	return false
}

// changedSince returns the addresses at which the rules of a group changed
// since it was computed (deps then, now), when they changed only for pods
// changing in this compilation, at no more than maxWindowed addresses.
func (c *Compiler) changedSince(then, now []ruleDep) ([]uint32, bool) {
	if len(then) != len(now) {
		return nil, false
	}
	var xs []uint32
	for i := range then {
		if then[i].key != now[i].key {
			return nil, false
		}
		if then[i].version == now[i].version {
			continue
		}
		r := c.rules[now[i].key]
		if r == nil || r.changedGen != c.gen || r.prevVersion != then[i].version {
			return nil, false
		}
		xs = append(xs, r.changed...)
	}
	slices.Sort(xs)
	xs = slices.Compact(xs)
	return xs, len(xs) <= maxWindowed
}

// netDelta is the difference between base and the set after deleting del
// and adding add, in that order, element by element.
func netDelta(base *Set, del, add [][]string) *setDelta {
	n := map[string]int{}
	key := map[string][]string{}
	for _, k := range del {
		n[elementKey(k)]--
		key[elementKey(k)] = k
	}
	for _, k := range add {
		n[elementKey(k)]++
		key[elementKey(k)] = k
	}
	d := &setDelta{base: base}
	base.delta = nil // one step back is all ApplyWith uses: no chain of old sets
	for _, ks := range sortedKeys(n) {
		switch {
		case n[ks] < 0:
			d.del = append(d.del, key[ks])
		case n[ks] > 0:
			d.add = append(d.add, key[ks])
		}
	}
	return d
}

func rangeElems(rs []ipRange) [][]string {
	out := make([][]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, []string{formatRange(r)})
	}
	return out
}

func boxElems(bs []portBox) [][]string {
	out := make([][]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, []string{formatRange(b.src), protoNames[b.proto], formatPorts(b.lo, b.hi)})
	}
	return out
}

// policySelectors are the label selectors of np (pod selector and peers').
func policySelectors(np *networkingv1.NetworkPolicy) []*metav1.LabelSelector {
	out := []*metav1.LabelSelector{&np.Spec.PodSelector}
	add := func(peers []networkingv1.NetworkPolicyPeer) {
		for i := range peers {
			if peers[i].PodSelector != nil {
				out = append(out, peers[i].PodSelector)
			}
			if peers[i].NamespaceSelector != nil {
				out = append(out, peers[i].NamespaceSelector)
			}
		}
	}
	for _, r := range np.Spec.Ingress {
		add(r.From)
	}
	for _, r := range np.Spec.Egress {
		add(r.To)
	}
	return out
}

// ruleDeps lists the rules of pols in dir with their current versions
// (0 for a rule not computed yet).
func ruleDeps(ix *index, dir direction, pols []*networkingv1.NetworkPolicy) []ruleDep {
	var out []ruleDep
	for _, np := range pols {
		n := len(np.Spec.Ingress)
		if dir == egress {
			n = len(np.Spec.Egress)
		}
		for i := 0; i < n; i++ {
			k := peerKey{np: np, dir: dir, rule: i}
			var v uint64
			if r, ok := ix.comp.rules[k]; ok {
				v = r.version
				r.used = true
			}
			out = append(out, ruleDep{k, v})
		}
	}
	return out
}

// podList is every pod selectors can match (built on first use).
func (ix *index) podList() []*podInfo {
	if ix.pods != nil || ix.comp == nil {
		return ix.pods
	}
	infos := make([]podInfo, 0, len(ix.comp.addrs))
	if ix.snap.partial {
		// The snapshot names only the pods that changed: every pod the
		// compiler knows, as it last saw it.
		views := make([]Pod, 0, len(ix.comp.pods))
		for _, st := range ix.comp.pods {
			if st.ok {
				views = append(views, st.view())
				infos = append(infos, podInfo{ip: st.ip})
			}
		}
		ix.pods = make([]*podInfo, len(infos))
		for i := range infos {
			infos[i].pod = &views[i]
			ix.pods[i] = &infos[i]
		}
		return ix.pods
	}
	for i := range ix.snap.Pods {
		if st := ix.comp.pods[podKey{ix.snap.Pods[i].Namespace, ix.snap.Pods[i].Name}]; st.ok {
			infos = append(infos, podInfo{pod: &ix.snap.Pods[i], ip: st.ip})
		}
	}
	ix.pods = make([]*podInfo, len(infos))
	for i := range infos {
		ix.pods[i] = &infos[i]
	}
	return ix.pods
}
