package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteInterfaces finds local pod interfaces from the kernel: every IPv4 /32
// route on a link whose name starts with HostIfacePrefix is a pod address
// (the plugin installs exactly that host route for each pod).
type RouteInterfaces struct{}

var _ InterfaceLister = RouteInterfaces{}

// PodInterfaces implements InterfaceLister.
func (RouteInterfaces) PodInterfaces() (map[netip.Addr]string, error) {
	var (
		links  []netlink.Link
		routes []netlink.Route
		err    error
	)
	// Dumps can be interrupted by concurrent changes; retry a few times.
	for i := 0; i < 5; i++ {
		links, err = netlink.LinkList()
		if err == nil {
			routes, err = netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		}
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list links and routes: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, HostIfacePrefix) {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	out := map[netip.Addr]string{}
	for _, r := range routes {
		name, ok := names[r.LinkIndex]
		if !ok || r.Dst == nil {
			continue
		}
		if ones, bits := r.Dst.Mask.Size(); ones != 32 || bits != 32 {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
			out[a] = name
		}
	}
	return out, nil
}
