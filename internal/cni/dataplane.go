package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/sysctl"
)

// GatewayV4 is the link-local next hop every pod routes through. It is not
// configured anywhere: the pod holds a permanent neighbour entry mapping it
// to the host-side veth's MAC.
var GatewayV4 = netip.MustParseAddr("169.254.1.1")

// podLink describes what setupPod built.
type podLink struct {
	hostName  string
	hostIndex int
	hostMAC   net.HardwareAddr
	podIndex  int
	podMAC    net.HardwareAddr
}

// nsHandle opens a netlink handle inside the network namespace at path, so
// the pod's side is programmed without switching the calling thread.
func nsHandle(netnsPath string) (*netlink.Handle, error) {
	h, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return netlink.NewHandleAt(h)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT)
}

// setupPod writes the contract (internal/podlink) for one attachment: the
// veth pair (host end in the current namespace named podlink.HostName, with
// the attachment's alias and its namespace's device group; pod end in podNS
// as al.IfName), the pod's addresses as host routes, and the pod's route
// through the link-local gateway. It returns what it built; on error the
// caller rolls back with teardown.
func setupPod(podNS ns.NetNS, al podlink.Alias, mtu int, addrs []netip.Addr) (*podLink, error) {
	ifName := al.IfName
	hostName := podlink.HostName(al.ContainerID, ifName)
	podH, err := nsHandle(podNS.Path())
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", podNS.Path(), err)
	}
	defer podH.Close()

	// A host-side interface with our deterministic name but no pod end (the
	// caller checked ifName is absent) is debris of an interrupted ADD when
	// it carries this attachment's alias; anything else is not ours to
	// delete (teardown refuses it).
	if err := teardown(al.Network, al.ContainerID, ifName); err != nil {
		return nil, err
	}
	if err := createVeth(podH, hostName, ifName, mtu, al.String()); err != nil {
		return nil, err
	}
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", hostName, err)
	}
	pl := &podLink{hostName: hostName, hostIndex: host.Attrs().Index, hostMAC: host.Attrs().HardwareAddr}
	// The device group names the pod's namespace to nftables.
	if group := podlink.GroupForNamespace(al.PodNamespace); group != podlink.GroupUnknown {
		if err := netlink.LinkSetGroup(host, int(group)); err != nil {
			return pl, fmt.Errorf("set group on %s: %w", hostName, err)
		}
	}
	if err := hostSideIPv6(hostName, hasIPv6(addrs)); err != nil {
		return pl, err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return pl, fmt.Errorf("set %s up: %w", hostName, err)
	}
	if err := configurePodSide(podNS.Path(), podH, ifName, pl, addrs); err != nil {
		return pl, err
	}
	for _, a := range addrs {
		if a.Is6() {
			if err := netlink.NeighSet(podNeighbour(pl, a)); err != nil {
				return pl, fmt.Errorf("add neighbour %s on %s: %w", a, hostName, err)
			}
		}
		if err := netlink.RouteReplace(podlink.HostRoute(pl.hostIndex, a)); err != nil {
			return pl, fmt.Errorf("add host route %s dev %s: %w", a, hostName, err)
		}
	}
	waitRunning(podH, pl, operUpWait)
	return pl, nil
}

// operUpWait bounds waitRunning.
const operUpWait = time.Second

// waitRunning waits, at most limit, until both ends of the veth are
// operationally up. The kernel applies a carrier change (and gives the
// device its real queue) from a work queue; until then a packet sent on it
// is dropped, and a pod's first connection would wait a second for TCP's
// retransmission. Usually both are up at the first look; on a loaded node
// it can take milliseconds. Past the limit ADD goes on: the pod works once
// the kernel catches up.
func waitRunning(podH *netlink.Handle, pl *podLink, limit time.Duration) {
	// IFF_RUNNING: what linkwatch sets once it applied the carrier (oper
	// state up, or unknown for a driver that reports none).
	up := func(l netlink.Link, err error) bool { return err == nil && l.Attrs().Flags&net.FlagRunning != 0 }
	for deadline := time.Now().Add(limit); ; time.Sleep(2 * time.Millisecond) {
		if up(podH.LinkByIndex(pl.podIndex)) && up(netlink.LinkByIndex(pl.hostIndex)) {
			return
		}
		if time.Now().After(deadline) {
			return
		}
	}
}

// podNeighbour is the host side's permanent neighbour entry for the pod's
// IPv6 address a: the mirror of the pod's gateway entry. Without it the
// node would solicit the pod's address from its link-local address on the
// host end, which the kernel makes only once the link has carrier and
// marks usable from a work queue: a first packet to a brand-new pod could
// wait a second for a solicitation retry. With it, the node never solicits
// a pod (it is removed with the interface).
func podNeighbour(pl *podLink, a netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: pl.hostIndex, IP: a.AsSlice(), HardwareAddr: pl.podMAC, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V6}
}

// createVeth makes the veth pair inside the pod's namespace (podH), gives
// the host end its alias there, and only then moves it into the current
// (host) namespace: an ADD killed at any point never leaves an interface
// without Trellis's alias on the host, where teardown would refuse it.
func createVeth(podH *netlink.Handle, hostName, ifName string, mtu int, alias string) error {
	hostNS, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open the host network namespace: %w", err)
	}
	defer hostNS.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	attrs.MTU = mtu
	if err := podH.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: ifName, PeerMTU: uint32(mtu)}); err != nil {
		return fmt.Errorf("create veth %s/%s: %w", hostName, ifName, err)
	}
	host, err := podH.LinkByName(hostName)
	if err == nil {
		// The kernel ignores an alias in the request that creates a link.
		err = podH.LinkSetAlias(host, alias)
	}
	if err == nil {
		err = podH.LinkSetNsFd(host, int(hostNS))
	}
	if err != nil {
		// Both ends are still in the pod's namespace: remove the pair there.
		if l, lerr := podH.LinkByName(hostName); lerr == nil {
			_ = podH.LinkDel(l)
		}
		return fmt.Errorf("veth %s/%s: give the host end its alias and move it to the host namespace: %w", hostName, ifName, err)
	}
	return nil
}

// configurePodSide gives the pod end its addresses, brings it up, and adds
// per address family the gateway's permanent neighbour and the default
// route through it. With an IPv6 address, duplicate address detection is
// off on the pod end first (see podSideIPv6).
func configurePodSide(podNSPath string, podH *netlink.Handle, ifName string, pl *podLink, addrs []netip.Addr) error {
	pod, err := podH.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("look up %s in pod namespace: %w", ifName, err)
	}
	pl.podIndex, pl.podMAC = pod.Attrs().Index, pod.Attrs().HardwareAddr
	if hasIPv6(addrs) {
		if err := podSideIPv6(podNSPath, ifName); err != nil {
			return err
		}
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: hostPrefix(a)}
		if a.Is6() {
			// Usable at once: never tentative (accept_dad=0 covers the
			// link-local address the kernel adds; this the pod's own).
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := podH.AddrAdd(pod, addr); err != nil {
			return fmt.Errorf("add address %s to %s: %w", a, ifName, err)
		}
	}
	if err := podH.LinkSetUp(pod); err != nil {
		return fmt.Errorf("set %s up: %w", ifName, err)
	}
	for _, a := range addrs {
		gw := gatewayFor(a)
		neigh := &netlink.Neigh{LinkIndex: pl.podIndex, IP: gw.AsSlice(), HardwareAddr: pl.hostMAC, State: netlink.NUD_PERMANENT, Family: family(a)}
		if err := podH.NeighSet(neigh); err != nil {
			return fmt.Errorf("add neighbour %s on %s: %w", gw, ifName, err)
		}
		def := &netlink.Route{LinkIndex: pl.podIndex, Dst: defaultRoute(a), Gw: gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
		if err := podH.RouteReplace(def); err != nil {
			return fmt.Errorf("add default route via %s dev %s: %w", gw, ifName, err)
		}
	}
	return nil
}

// teardown removes the attachment's host-side interface (which removes the
// pod end and the host route with it). A missing interface is success. An
// interface of that name that does not carry the attachment's alias is
// someone else's: teardown leaves it and fails with ErrForeignLink.
func teardown(network, containerID, ifName string) error {
	name := podlink.HostName(containerID, ifName)
	link, err := netlinksafe.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	al, ok := podlink.ParseAlias(link.Attrs().Alias)
	if !ok || al.Network != network || al.ContainerID != containerID || al.IfName != ifName {
		return fmt.Errorf("%w: %s (alias %q) is not the interface of %s/%s on network %s; remove or rename it",
			ErrForeignLink, name, link.Attrs().Alias, containerID, ifName, network)
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// ErrForeignLink: a host interface has the name of an attachment's
// interface but is not Trellis's.
var ErrForeignLink = errors.New("host interface exists and is not Trellis's")

// enableForwarding turns on IP forwarding in the host namespace for the
// families of addrs, as the reference ptp plugin does: routed pods reach
// nothing, not even each other, without it. The agent sets it too; this
// covers the plugin used alone and a runtime calling before the agent ran.
// IPv6 forwarding keeps the node's router advertisements working
// (sysctl.EnableIPv6Forwarding: accept_ra 1 becomes 2 first, pod
// interfaces and overlays left out); raised names the interfaces whose
// accept_ra it raised.
func enableForwarding(addrs []netip.Addr) (raised []string, err error) {
	if slices.ContainsFunc(addrs, netip.Addr.Is4) {
		if err := sysctl.Set("net/ipv4/ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	if hasIPv6(addrs) {
		return sysctl.EnableIPv6Forwarding(podlink.NoRAInterface())
	}
	return nil, nil
}

func hasIPv6(addrs []netip.Addr) bool { return slices.ContainsFunc(addrs, netip.Addr.Is6) }

// hostSideIPv6 sets the host end's IPv6 sysctls before it comes up: no
// router advertisements (a pod must not be able to give the node a default
// route; best effort without an IPv6 address: a kernel without IPv6 has no
// such file), and, when the pod has an IPv6 address, no duplicate address
// detection, so the host end's link-local address, the source of the
// node's neighbour solicitations towards the pod, is usable at once (while
// it is tentative the kernel sends none, and traffic to the pod waits).
func hostSideIPv6(hostName string, ipv6 bool) error {
	conf := "net/ipv6/conf/" + hostName + "/"
	if err := sysctl.Set(conf+"accept_ra", "0"); err != nil && ipv6 {
		return fmt.Errorf("host interface %s: %w", hostName, err)
	}
	if !ipv6 {
		return nil
	}
	if err := sysctl.Set(conf+"accept_dad", "0"); err != nil {
		return fmt.Errorf("host interface %s: %w", hostName, err)
	}
	return nil
}

// podSideIPv6 turns duplicate address detection off on the pod end (inside
// the pod's namespace, before it comes up): the pod's link-local address is
// usable at once. The address is unique by construction (IPAM), and the
// link has two ends, both ours.
func podSideIPv6(podNSPath, ifName string) error {
	if err := sysctl.SetAt(podNSPath, "net/ipv6/conf/"+ifName+"/accept_dad", "0"); err != nil {
		return fmt.Errorf("pod interface %s: %w", ifName, err)
	}
	return nil
}

// ownedLinks lists the host-side interfaces the plugin made for network.
func ownedLinks(network string) ([]podlink.Interface, error) {
	ifaces, err := podlink.List(nil)
	if err != nil {
		return nil, err
	}
	var out []podlink.Interface
	for _, i := range ifaces {
		if i.Alias.Network == network && i.Alias.ContainerID != "" {
			out = append(out, i)
		}
	}
	return out, nil
}

func gatewayFor(a netip.Addr) netip.Addr {
	if a.Is4() {
		return GatewayV4
	}
	return GatewayV6
}

// GatewayV6 is the link-local next hop of every pod's IPv6 default route,
// the counterpart of GatewayV4, and like it configured nowhere: the pod
// holds a permanent neighbour entry mapping it to the host-side veth's MAC.
//
// Why a fixed link-local address: an IPv6 next hop should be link-local
// (routers are addressed by their link-local address, RFC 4861), and each
// veth is a link of its own, so the same address serves every pod and no
// global address is spent on gateways. fe80::1 can never be a kernel-made
// address on either end: those are EUI-64 (with ff:fe in the middle) or
// random. With the neighbour permanent, the pod never solicits the gateway,
// so nothing has to answer for fe80::1 on the host side (no proxy NDP, no
// address on trl…), exactly like 169.254.1.1 needs no proxy ARP.
var GatewayV6 = netip.MustParseAddr("fe80::1")

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func hostPrefix(a netip.Addr) *net.IPNet { return podlink.HostPrefix(a) }

func defaultRoute(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: make(net.IP, a.BitLen()/8), Mask: net.CIDRMask(0, a.BitLen())}
}
