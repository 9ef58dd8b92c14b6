package routing

import (
	"maps"
	"reflect"
	"slices"

	v1 "k8s.io/api/core/v1"

	"github.com/trellisnet/trellis/internal/wireguard"
)

// A sync computes the desired state from every Node: at 5,000 nodes that
// is most of its time. But the usual change is one Node joining, created
// after every other: it claims its data last, so every earlier decision
// stands and the state only grows by its entries. computeCache keeps the
// last state, the screen holding the claims and the Node objects it was
// computed from, and extends the state when the only change is Nodes added
// after all others (Nodes whose other updates left what PeerFromNode reads
// as it was, such as kubelet's status updates, count as unchanged);
// anything else (a Node's address, pod CIDRs or annotations changed, a
// Node deleted, an older one appearing, this node or its underlay
// changing) is a full Compute.

type computeCache struct {
	local  LocalNode
	nodes  map[string]*v1.Node
	latest *Peer // the last peer in claim order (nil: none)
	screen *screen
	d      *Desired
}

// desired returns the desired state for local and nodes (this node among
// them).
func (cc *computeCache) desired(local LocalNode, nodes []*v1.Node, p Params) *Desired {
	if added, ok := cc.added(local, nodes); ok {
		if len(added) == 0 {
			return cc.d
		}
		cc.d = extend(cc.d, cc.screen, local, added, p)
		for _, n := range nodes {
			cc.nodes[n.Name] = n
		}
		cc.latest = &added[len(added)-1]
		return cc.d
	}
	peers := make([]Peer, 0, len(nodes))
	*cc = computeCache{local: local, nodes: make(map[string]*v1.Node, len(nodes))}
	for _, n := range nodes {
		peer := PeerFromNode(n)
		peers = append(peers, peer)
		cc.nodes[n.Name] = n
		if peer.Name != local.Name && (cc.latest == nil || comparePeers(peer, *cc.latest) > 0) {
			cc.latest = &peer
		}
	}
	cc.d, cc.screen = compute(local, peers, p)
	return cc.d
}

// added returns the peers of nodes the cache does not hold, in claim
// order, when extending the cached state is right: nothing else changed
// and each comes after every cached peer.
func (cc *computeCache) added(local LocalNode, nodes []*v1.Node) ([]Peer, bool) {
	if cc.d == nil || !reflect.DeepEqual(cc.local, local) {
		return nil, false
	}
	var added []Peer
	known := 0
	for _, n := range nodes {
		old, ok := cc.nodes[n.Name]
		switch {
		case !ok:
			added = append(added, PeerFromNode(n))
		case old != n && !samePeerData(old, n):
			return nil, false
		default:
			known++
		}
	}
	if known != len(cc.nodes) {
		return nil, false // some were deleted
	}
	slices.SortFunc(added, comparePeers)
	if len(added) > 0 && cc.latest != nil && comparePeers(added[0], *cc.latest) <= 0 {
		return nil, false
	}
	return added, true
}

// samePeerData: a and b (two versions of one Node) hold the same data for
// PeerFromNode (a status update, such as kubelet's, changes none of it).
func samePeerData(a, b *v1.Node) bool {
	for _, k := range []string{AnnotationVTEPMAC, AnnotationNodeIP, wireguard.AnnotationPublicKey} {
		if a.Annotations[k] != b.Annotations[k] {
			return false
		}
	}
	return a.CreationTimestamp.Equal(&b.CreationTimestamp) && a.Spec.PodCIDR == b.Spec.PodCIDR &&
		slices.Equal(a.Spec.PodCIDRs, b.Spec.PodCIDRs) && slices.Equal(a.Status.Addresses, b.Status.Addresses)
}

// extend returns prev (computed by compute, whose claims s holds) with the
// added peers screened and programmed; added are in claim order, each
// after every peer of prev. It equals Compute over all the peers.
func extend(prev *Desired, s *screen, local LocalNode, added []Peer, p Params) *Desired {
	d := prev.clone()
	local = local.routable(p)
	for _, peer := range added {
		peer, prob := s.admit(peer)
		if prob != nil {
			d.Problems = append(d.Problems, *prob)
			d.Peers["none"]++
			continue
		}
		d.addPeer(local, peer, p)
	}
	d.finish(p)
	return d
}

// clone copies d's slices and maps (devices are shared: never modified).
func (d *Desired) clone() *Desired {
	c := *d
	c.Routes, c.FDB, c.Neighbors, c.Problems = slices.Clone(d.Routes), slices.Clone(d.FDB), slices.Clone(d.Neighbors), slices.Clone(d.Problems)
	c.FDB6, c.Neighbors6 = slices.Clone(d.FDB6), slices.Clone(d.Neighbors6)
	c.Peers = maps.Clone(d.Peers)
	if d.WireGuard != nil {
		wg := *d.WireGuard
		wg.Peers = slices.Clone(d.WireGuard.Peers)
		c.WireGuard = &wg
	}
	return &c
}
