package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/ipam"
	"github.com/trellisnet/trellis/internal/podlink"
)

// cmdCheck verifies that the attachment described by prevResult is intact:
// the pod interface with its addresses, gateway neighbour and default
// routes; the host interface and its host routes; the IPAM reservation.
func cmdCheck(args *skel.CmdArgs, cl *callLog) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "CHECK: cannot parse prevResult", err.Error())
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK: prevResult is required", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "CHECK: cannot convert prevResult", err.Error())
	}
	var addrs []netip.Addr
	for _, ipc := range prev.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) == 0 {
		return checkFailed("prevResult lists no address for %s", args.IfName)
	}
	cl.add("addresses", addrs)
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	hostName := podlink.HostName(args.ContainerID, args.IfName)
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return checkFailed("host interface %s: %v", hostName, err)
	}
	if err := checkHostSide(host, addrs); err != nil {
		return err
	}
	if err := checkPodSide(podNS.Path(), args.IfName, host, addrs); err != nil {
		return err
	}
	return checkReservation(conf, ipam.Key{ContainerID: args.ContainerID, IfName: args.IfName}, addrs)
}

func checkFailed(format string, a ...any) error {
	return types.NewError(types.ErrInternal, "CHECK failed: "+fmt.Sprintf(format, a...), "")
}

func checkHostSide(host netlink.Link, addrs []netip.Addr) error {
	name := host.Attrs().Name
	if host.Attrs().Flags&net.FlagUp == 0 {
		return checkFailed("host interface %s is down", name)
	}
	for _, a := range addrs {
		routes, err := netlinksafe.RouteListFiltered(family(a), &netlink.Route{Dst: hostPrefix(a)}, netlink.RT_FILTER_DST)
		if err != nil {
			return checkFailed("list host routes to %s: %v", a, err)
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.LinkIndex == host.Attrs().Index }) {
			return checkFailed("host route %s dev %s is missing", hostPrefix(a), name)
		}
	}
	return nil
}

// checkHostNeighbour checks the host side's permanent neighbour entry of
// an IPv6 pod address (podNeighbour) against the pod end's MAC.
func checkHostNeighbour(host netlink.Link, a netip.Addr, podMAC net.HardwareAddr) error {
	neighs, err := netlink.NeighList(host.Attrs().Index, netlink.FAMILY_V6)
	if err != nil {
		return checkFailed("list neighbours of %s: %v", host.Attrs().Name, err)
	}
	if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
		return n.IP.Equal(a.AsSlice()) && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == podMAC.String()
	}) {
		return checkFailed("host neighbour %s -> %s on %s is missing", a, podMAC, host.Attrs().Name)
	}
	return nil
}

func checkPodSide(netnsPath, ifName string, host netlink.Link, addrs []netip.Addr) error {
	h, err := nsHandle(netnsPath)
	if err != nil {
		return checkFailed("open %s: %v", netnsPath, err)
	}
	defer h.Close()
	pod, err := h.LinkByName(ifName)
	if err != nil {
		return checkFailed("pod interface %s: %v", ifName, err)
	}
	if pod.Attrs().Flags&net.FlagUp == 0 {
		return checkFailed("pod interface %s is down", ifName)
	}
	for _, a := range addrs {
		have, err := h.AddrList(pod, family(a))
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return checkFailed("list addresses of %s: %v", ifName, err)
		}
		if !slices.ContainsFunc(have, func(x netlink.Addr) bool { return x.IPNet.String() == hostPrefix(a).String() }) {
			return checkFailed("pod interface %s lacks address %s", ifName, hostPrefix(a))
		}
		gw := gatewayFor(a)
		routes, err := netlinksafe.Handle{Handle: h}.RouteList(pod, family(a))
		if err != nil {
			return checkFailed("list routes of %s: %v", ifName, err)
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return (r.Dst == nil || r.Dst.String() == defaultRoute(a).String()) && r.Gw.Equal(gw.AsSlice())
		}) {
			return checkFailed("pod default route via %s dev %s is missing", gw, ifName)
		}
		neighs, err := h.NeighList(pod.Attrs().Index, family(a))
		if err != nil {
			return checkFailed("list neighbours of %s: %v", ifName, err)
		}
		if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
			return n.IP.Equal(gw.AsSlice()) && n.HardwareAddr.String() == host.Attrs().HardwareAddr.String()
		}) {
			return checkFailed("pod neighbour %s -> %s on %s is missing", gw, host.Attrs().HardwareAddr, ifName)
		}
		if a.Is6() {
			if err := checkHostNeighbour(host, a, pod.Attrs().HardwareAddr); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkReservation(conf *NetConf, key ipam.Key, addrs []netip.Addr) error {
	var held []netip.Addr
	err := ipam.NewStore(conf.IPAM.DataDir, conf.Name).View(context.Background(), func(s *ipam.State) error {
		for _, a := range s.Lookup(key) {
			held = append(held, a.Addr)
		}
		return nil
	})
	if err != nil {
		return ipamError(err)
	}
	for _, a := range addrs {
		if !slices.Contains(held, a) {
			return checkFailed("IPAM holds no reservation of %s for %s (holds %v)", a, key, held)
		}
	}
	return nil
}

// cmdStatus reports whether the plugin can wire pods now (CNI error 50 if
// not): with requireDataplane only while the agent's base dataplane is in
// place (gate.go); then with configured subnets always; otherwise only when
// the node state file exists, lists pod subnets and says the node's network
// is ready.
func cmdStatus(args *skel.CmdArgs, cl *callLog) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	st, err := conf.nodeState()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "node network not ready: "+err.Error(), "")
	}
	if err := conf.dataplaneReady(st, nftTableExists); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "node network not ready: "+err.Error(), "")
	}
	if len(conf.Subnets()) > 0 {
		return nil
	}
	if len(st.PodCIDRs) == 0 {
		return types.NewError(types.ErrPluginNotAvailable, "node network not ready: no pod subnet assigned to this node yet", "")
	}
	if !st.Ready {
		reason := st.Reason
		if reason == "" {
			reason = "agent has not programmed this node's routes yet"
		}
		return types.NewError(types.ErrPluginNotAvailable, "node network not ready: "+reason, "")
	}
	cl.add("podCIDRs", st.PodCIDRs)
	return nil
}
