package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/slim"
)

// InterfaceLister returns the local pod interfaces as the plugin wrote them
// (internal/podlink: name, host routes, group, alias). The agent passes its
// podlink.Watcher; podlink.Lister lists on every call.
type InterfaceLister interface {
	PodInterfaces() ([]podlink.Interface, error)
}

// InterfacesChanged is told the local pod interfaces after each change
// (the agent calls it from its podlink.Watcher) and asks for a sync when
// what the policy table depends on changed: the interfaces that carry a pod
// address, with their alias and group. A new pod's interface is so
// programmed without waiting for its status to come back through the API
// server, and the steps of a CNI ADD before the host route (link, alias,
// group, up) cost no sync.
func (c *Controller) InterfacesChanged(ifaces []podlink.Interface) {
	var b strings.Builder
	for _, i := range ifaces {
		if len(i.Addrs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%d %s %d %v %+v\n", i.Index, i.Name, i.Group, i.Addrs, i.Alias)
	}
	key := b.String()
	c.mu.Lock()
	same := c.ifaceKey != nil && *c.ifaceKey == key
	c.ifaceKey = &key
	c.mu.Unlock()
	if !same {
		c.changed()
	}
}

// localIfaces pairs local pods with their host interfaces. An interface
// whose alias names its pod belongs to that pod only (and, when the alias
// carries the pod's UID, to that incarnation only); an interface without a
// pod in its alias (made by an older plugin, or an alias too long to hold
// one) is paired by address, as the pod's status reports it.
type localIfaces struct {
	nodeName string
	byPod    map[string][]podlink.Interface // "namespace/name" → interfaces naming it
	byAddr   map[netip.Addr]podlink.Interface
}

func newLocalIfaces(nodeName string, ifaces []podlink.Interface) *localIfaces {
	l := &localIfaces{nodeName: nodeName, byPod: map[string][]podlink.Interface{}, byAddr: map[netip.Addr]podlink.Interface{}}
	for _, i := range ifaces {
		if pod := i.Alias.Pod(); pod != "" {
			l.byPod[pod] = append(l.byPod[pod], i)
		}
		for _, a := range i.Addrs {
			l.byAddr[a.Unmap()] = i
		}
	}
	return l
}

func (l *localIfaces) local(p *slim.Pod) bool {
	return p.NodeName == l.nodeName && !p.HostNetwork
}

// named returns the interfaces whose alias names p (this incarnation: same
// UID when the alias has one).
func (l *localIfaces) named(p *slim.Pod) []podlink.Interface {
	var out []podlink.Interface
	for _, i := range l.byPod[p.Namespace+"/"+p.Name] {
		if u := i.Alias.PodUID; u == "" || u == string(p.UID) || u == p.MirrorUID {
			out = append(out, i)
		}
	}
	return out
}

// withAddresses returns pods where each local pod with exactly one
// interface naming it with an address carries that interface's
// addresses (a copy; the listers' objects are never modified) when its
// status has no address yet, or when the interface names this very
// incarnation (its UID) and its addresses differ from the status's. The
// kernel knows a pod's address as soon as the plugin has wired it; the API
// knows it only after the kubelet's status update has gone round through
// the API server — a sandbox the kubelet re-creates while the API server
// is away gets a new address the status will not show until it is back.
func (l *localIfaces) withAddresses(pods []*slim.Pod) []*slim.Pod {
	var out []*slim.Pod
	copied := false
	for idx, p := range pods {
		if l.local(p) {
			if named := l.named(p); len(named) == 1 && kernelKnowsBetter(p, named[0]) {
				if ips := podIPs(named[0]); len(ips) > 0 {
					if !copied {
						out, copied = append([]*slim.Pod(nil), pods...), true
					}
					cp := *p
					cp.IPs = ips
					out[idx] = &cp
				}
			}
		}
	}
	if !copied {
		return pods
	}
	return out
}

// kernelKnowsBetter reports whether the addresses of interface i, which
// names pod p, replace those of p's status: p has none yet, or i's alias
// carries p's UID and its addresses differ from the status's.
func kernelKnowsBetter(p *slim.Pod, i podlink.Interface) bool {
	if len(p.IPs) == 0 {
		return true
	}
	if i.Alias.PodUID == "" || i.Alias.PodUID != string(p.UID) {
		return false
	}
	for _, a := range podIPs(i) {
		if !slices.Contains(p.IPs, a) {
			return true
		}
	}
	return false
}

// podIPs are the interface's addresses (both families; podlink lists no
// link-local one).
func podIPs(i podlink.Interface) []netip.Addr {
	var out []netip.Addr
	for _, a := range i.Addrs {
		out = append(out, a.Unmap())
	}
	return out
}

// interfaceOf returns the host interface of local pod sp ("" if none): an
// interface naming the pod that carries one of its addresses, else an
// interface naming no pod, or this pod under another UID, that carries one
// of them. An interface naming another pod is never paired with this one,
// even if the addresses agree (the API's view of an address may be stale;
// the alias is not).
func (l *localIfaces) interfaceOf(p *slim.Pod, sp Pod) string {
	for _, i := range l.named(p) {
		for _, a := range sp.IPs {
			for _, ia := range i.Addrs {
				if a == ia {
					return i.Name
				}
			}
		}
	}
	for _, a := range sp.IPs {
		if i, ok := l.byAddr[a]; ok && (i.Alias.Pod() == "" || i.Alias.Pod() == p.Namespace+"/"+p.Name) {
			return i.Name
		}
	}
	return ""
}

// Lister lists the local pod interfaces on every call (podlink.List in the
// calling thread's network namespace): for tools and tests without a
// Watcher.
type Lister struct{}

var _ InterfaceLister = Lister{}

// PodInterfaces implements InterfaceLister.
func (Lister) PodInterfaces() ([]podlink.Interface, error) { return podlink.List(nil) }
