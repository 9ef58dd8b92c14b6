package podlink

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Interface is one local pod's host-side interface as the kernel holds it.
type Interface struct {
	Index int
	Name  string
	// Group is the device group (GroupForNamespace of the pod's namespace,
	// GroupUnknown when the runtime did not pass it).
	Group uint32
	// Addrs are the pod addresses routed to the interface (its host routes),
	// sorted; empty while the plugin has not installed them yet.
	Addrs []netip.Addr
	// Alias is the parsed alias; the zero Alias when the interface has none
	// the plugin wrote (yet).
	Alias Alias
}

// IPv4 returns the interface's first IPv4 pod address.
func (i Interface) IPv4() (netip.Addr, bool) {
	for _, a := range i.Addrs {
		if a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (i Interface) equal(o Interface) bool {
	return i.Index == o.Index && i.Name == o.Name && i.Group == o.Group && i.Alias == o.Alias && slices.Equal(i.Addrs, o.Addrs)
}

// List returns the local pod interfaces (every link named Prefix…, with its
// host routes, group and alias) sorted by index, through h (nil: the
// calling thread's network namespace). Interrupted dumps are retried
// (netlinksafe).
func List(h *netlink.Handle) ([]Interface, error) {
	if h == nil {
		h = &netlink.Handle{}
	}
	sh := netlinksafe.Handle{Handle: h}
	links, err := sh.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	byIndex := map[int]*Interface{}
	var out []*Interface
	for _, l := range links {
		a := l.Attrs()
		if !IsHostName(a.Name) {
			continue
		}
		i := &Interface{Index: a.Index, Name: a.Name, Group: a.Group}
		if al, ok := ParseAlias(a.Alias); ok {
			i.Alias = al
		}
		byIndex[a.Index] = i
		out = append(out, i)
	}
	if len(out) == 0 {
		return nil, nil
	}
	routes, err := sh.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for i := range routes {
		r := &routes[i]
		pi, ok := byIndex[r.LinkIndex]
		if !ok {
			continue
		}
		if a, ok := hostRouteAddr(r); ok {
			pi.Addrs = append(pi.Addrs, a)
		}
	}
	res := make([]Interface, 0, len(out))
	for _, i := range out {
		sort.Slice(i.Addrs, func(x, y int) bool { return i.Addrs[x].Less(i.Addrs[y]) })
		i.Addrs = slices.Compact(i.Addrs)
		res = append(res, *i)
	}
	sort.Slice(res, func(x, y int) bool { return res[x].Index < res[y].Index })
	return res, nil
}

func equalLists(a, b []Interface) bool {
	return slices.EqualFunc(a, b, Interface.equal)
}
