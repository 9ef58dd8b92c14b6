package policy

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/slim"
)

// podView is the pod part of the controller's snapshot kept from one sync
// to the next, so that a sync costs what changed, not what exists: the pod
// informer's events name the pods that changed (dirty), and a sync reads
// only those from the cache, with every local pod (whose interfaces may
// have changed without an event), and hands the Compiler a partial
// snapshot. It resolves contested addresses as dedupeByIP does, keeping
// every address's claimants. A complete snapshot built from it equals
// SnapshotFromCache of the whole cache.
//
// Used by the controller's runner goroutine only; dirty keys are handed
// over under the controller's lock.
type podView struct {
	nodeName string
	// comp is the Compiler the view's snapshots go to: the pods of the
	// snapshot it compiled last are what the view last read (its
	// podState.src), except the pods kept out of it.
	comp *Compiler
	// losers are the pods kept out for losing their address to another
	// (dedupeByIP); finished pods, also kept out, claim nothing.
	losers map[podKey]*slim.Pod
	// owner is the pod that owns each claimed address (dedupeByIP's
	// choice; a pod is in the snapshot when it owns all of its addresses);
	// rivals, for an address claimed more than once, every claimant, the
	// owner included.
	owner  map[netip.Addr]*slim.Pod
	rivals map[netip.Addr][]*slim.Pod
	// local are the pods of this node (reread on every sync).
	local map[podKey]bool
}

func newPodView(nodeName string, comp *Compiler) *podView {
	return &podView{nodeName: nodeName, comp: comp, losers: map[podKey]*slim.Pod{}, owner: map[netip.Addr]*slim.Pod{},
		rivals: map[netip.Addr][]*slim.Pod{}, local: map[podKey]bool{}}
}

// prev is pod k as the view last read it (nil: gone, finished, or never
// seen).
func (v *podView) prev(k podKey) *slim.Pod {
	if st := v.comp.pods[k]; st != nil && st.src != nil {
		return st.src
	}
	return v.losers[k]
}

// podSource reads pods from the informer's cache by key.
type podSource interface {
	GetByKey(key string) (any, bool, error)
	List() []any
}

// keyOf is the podKey of an informer event's object ("", false for
// anything else).
func keyOf(obj any) (podKey, bool) {
	switch o := obj.(type) {
	case *slim.Pod:
		return podKey{o.Namespace, o.Name}, true
	case *corev1.Pod:
		return podKey{o.Namespace, o.Name}, true
	case cache.DeletedFinalStateUnknown:
		return parsePodKey(o.Key)
	}
	return podKey{}, false
}

func parsePodKey(key string) (podKey, bool) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		return podKey{name: key}, key != ""
	}
	return podKey{ns, name}, true
}

// read is the cached pod of k (nil when gone).
func read(src podSource, k podKey) (*slim.Pod, error) {
	key := k.name
	if k.ns != "" {
		key = k.ns + "/" + k.name
	}
	obj, ok, err := src.GetByKey(key)
	if err != nil || !ok {
		return nil, err
	}
	return asSlim(obj), nil
}

// asSlim is a cached pod as the view reads it: the agent's informers hold
// slim.Pods; an informer without its transform holds API pods.
func asSlim(obj any) *slim.Pod {
	switch p := obj.(type) {
	case *slim.Pod:
		return p
	case *corev1.Pod:
		return slim.PodOf(p, nil)
	}
	return nil
}

// claims reports whether p claims its addresses (dedupeByIP's
// candidates).
func claims(p *slim.Pod) bool {
	return p != nil && !p.Finished() && !p.HostNetwork && len(p.IPs) > 0
}

// included reports whether p is in the snapshot.
func (v *podView) included(p *slim.Pod) bool {
	if p == nil || p.Finished() {
		return false
	}
	return !claims(p) || ownsAll(v.owner, p)
}

// update reads the pods named by dirty (all of them when full), and every
// local pod, and returns the pods of the snapshot that may have changed
// and the keys of those no longer in it. With full, the view starts
// afresh and pods is the complete snapshot's.
func (v *podView) update(src podSource, dirty map[podKey]struct{}, full bool, ifaces []podlink.Interface) (pods []Pod, removed []podKey, err error) {
	local := newLocalIfaces(v.nodeName, ifaces)
	if full {
		return v.rebuild(src, local), nil, nil
	}
	for k := range v.local {
		dirty[k] = struct{}{}
	}
	touched := make(map[podKey]touchedPod, len(dirty))
	for k := range dirty {
		p, err := read(src, k)
		if err != nil {
			return nil, nil, err
		}
		if p != nil && local.local(p) {
			p = local.withAddresses([]*slim.Pod{p})[0]
			v.local[k] = true
		} else {
			delete(v.local, k)
		}
		old := v.prev(k)
		if old == p && !v.local[k] {
			continue
		}
		touched[k] = touchedPod{p: p, read: true}
		if claims(old) {
			v.unclaim(old, touched)
		}
		if claims(p) {
			v.claim(p, touched)
		}
	}
	for k, t := range touched {
		p := t.p // as read (nil: gone), or as the view holds it when another's claim moved it
		delete(v.losers, k)
		if !v.included(p) {
			if claims(p) {
				v.losers[k] = p
			}
			removed = append(removed, k)
			continue
		}
		sp := PodFromCache(p, "")
		if local.local(p) {
			sp.Interface = local.interfaceOf(p, sp)
		}
		pods = append(pods, sp)
	}
	return pods, removed, nil
}

// rebuild starts the view afresh from the whole cache and returns the
// complete snapshot's pods.
func (v *podView) rebuild(src podSource, local *localIfaces) []Pod {
	objs := src.List()
	*v = podView{nodeName: v.nodeName, comp: v.comp, losers: map[podKey]*slim.Pod{},
		owner: make(map[netip.Addr]*slim.Pod, len(objs)), rivals: map[netip.Addr][]*slim.Pod{}, local: map[podKey]bool{}}
	all := make([]*slim.Pod, 0, len(objs))
	for _, o := range objs {
		p := asSlim(o)
		if p == nil {
			continue
		}
		if local.local(p) {
			p = local.withAddresses([]*slim.Pod{p})[0]
			v.local[podKey{p.Namespace, p.Name}] = true
		}
		all = append(all, p)
		if claims(p) {
			v.claim(p, nil)
		}
	}
	pods := make([]Pod, 0, len(all))
	for _, p := range all {
		if !v.included(p) {
			if claims(p) {
				v.losers[podKey{p.Namespace, p.Name}] = p
			}
			continue
		}
		sp := PodFromCache(p, "")
		if local.local(p) {
			sp.Interface = local.interfaceOf(p, sp)
		}
		pods = append(pods, sp)
	}
	return pods
}

// claim records p as a claimant of each of its addresses; the pods whose
// place in the snapshot may change are added to touched.
func (v *podView) claim(p *slim.Pod, touched map[podKey]touchedPod) {
	for i, ip := range p.IPs {
		if !slices.Contains(p.IPs[:i], ip) {
			v.claimIP(ip, p, touched)
		}
	}
}

func (v *podView) claimIP(ip netip.Addr, p *slim.Pod, touched map[podKey]touchedPod) {
	if rs, ok := v.rivals[ip]; ok {
		v.rivals[ip] = append(rs, p)
	} else if cur := v.owner[ip]; cur != nil {
		v.rivals[ip] = []*slim.Pod{cur, p}
	} else {
		v.owner[ip] = p
		return
	}
	v.elect(ip, touched)
}

// unclaim forgets p as a claimant of each of its addresses.
func (v *podView) unclaim(p *slim.Pod, touched map[podKey]touchedPod) {
	for i, ip := range p.IPs {
		if !slices.Contains(p.IPs[:i], ip) {
			v.unclaimIP(ip, p, touched)
		}
	}
}

func (v *podView) unclaimIP(ip netip.Addr, p *slim.Pod, touched map[podKey]touchedPod) {
	rs, ok := v.rivals[ip]
	if !ok {
		if v.owner[ip] == p {
			delete(v.owner, ip)
		}
		return
	}
	out := rs[:0]
	for _, r := range rs {
		if r != p {
			out = append(out, r)
		}
	}
	if len(out) == 1 {
		delete(v.rivals, ip)
		v.owner[ip] = out[0]
		touch(touched, out[0])
		return
	}
	v.rivals[ip] = out
	v.elect(ip, touched)
}

// elect makes the best of ip's rivals its owner (dedupeByIP's rule: not
// being deleted, then created last).
func (v *podView) elect(ip netip.Addr, touched map[podKey]touchedPod) {
	var best *slim.Pod
	for _, r := range v.rivals[ip] {
		if best == nil || newer(r, best) {
			best = r
		}
	}
	if cur := v.owner[ip]; cur != best {
		if cur != nil {
			touch(touched, cur)
		}
		touch(touched, best)
		v.owner[ip] = best
	}
}

// touchedPod is a pod whose place in the snapshot may have changed: as
// read from the cache in this update (read; nil when gone), or as the
// view holds it when another pod's claim moved it.
type touchedPod struct {
	p    *slim.Pod
	read bool
}

// touch adds p to touched unless it is there (nil: rebuilding, everything is).
func touch(touched map[podKey]touchedPod, p *slim.Pod) {
	if touched == nil {
		return
	}
	k := podKey{p.Namespace, p.Name}
	if _, ok := touched[k]; !ok {
		touched[k] = touchedPod{p: p}
	}
}
