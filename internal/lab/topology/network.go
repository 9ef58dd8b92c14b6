package topology

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/trellisnet/trellis/internal/lab/proc"
)

// ListLabNetns returns the existing network namespaces whose name carries the
// lab prefix (including leftovers of a crashed lab).
func ListLabNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing /run/netns: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// DeleteNetns removes the named namespaces; missing ones are fine.
func DeleteNetns(ctx context.Context, names []string) error {
	var errs []error
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := proc.Run(ctx, "ip", "netns", "delete", n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// veth creates a veth pair with one end in each namespace, directly (the
// machine's own namespace never holds either end).
func veth(ctx context.Context, nsA, nameA, nsB, nameB string) error {
	return proc.Run(ctx, "ip", "link", "add", "name", nameA, "netns", nsA, "type", "veth",
		"peer", "name", nameB, "netns", nsB)
}

func ipn(ctx context.Context, netns string, args ...string) error {
	return proc.Run(ctx, "ip", append([]string{"-n", netns}, args...)...)
}

func sysctl(ctx context.Context, netns, key, value string) error {
	return InNetns(ctx, netns, "sysctl", "-q", "-w", key+"="+value)
}

// BuildNetwork creates every namespace, bridge, veth, address and route of t.
// The caller records t.Netnses() in the state first so a failure part-way is
// cleaned by `down`.
func BuildNetwork(ctx context.Context, t Topology) error {
	for _, n := range t.Netnses() {
		if err := proc.Run(ctx, "ip", "netns", "add", n); err != nil {
			return err
		}
		if err := ipn(ctx, n, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	sw, rt := t.SwitchNetns, t.RouterNetns
	for _, s := range t.Subnets {
		if err := ipn(ctx, sw, "link", "add", s.Bridge, "type", "bridge"); err != nil {
			return err
		}
		if err := ipn(ctx, sw, "link", "set", s.Bridge, "up"); err != nil {
			return err
		}
		rIf := s.RouterIf
		if rIf == "" {
			rIf = fmt.Sprintf("sub%d", s.Index+1)
		}
		if err := attach(ctx, t, rt, rIf, fmt.Sprintf("rt-%d", s.Index+1), s.Bridge,
			netip.PrefixFrom(s.Gateway, s.Prefix.Bits()), netip.Addr{}); err != nil {
			return err
		}
		if s.Prefix6.IsValid() {
			if err := addAddr6(ctx, rt, rIf, netip.PrefixFrom(s.Gateway6, s.Prefix6.Bits()), netip.Addr{}); err != nil {
				return err
			}
		}
		if s.MD5Addr.IsValid() {
			if err := ipn(ctx, rt, "addr", "add", netip.PrefixFrom(s.MD5Addr, s.Prefix.Bits()).String(), "dev", rIf); err != nil {
				return err
			}
		}
	}
	hosts := append([]Host{t.ControlPlane}, t.Nodes...)
	for _, h := range hosts {
		s := t.Subnets[h.Subnet]
		if err := attach(ctx, t, h.Netns, "eth0", h.Name, s.Bridge,
			netip.PrefixFrom(h.Addr, h.Prefix), h.Gateway); err != nil {
			return err
		}
		if h.Addr6.IsValid() {
			if err := addAddr6(ctx, h.Netns, "eth0", netip.PrefixFrom(h.Addr6, s.Prefix6.Bits()), h.Gateway6); err != nil {
				return err
			}
		}
	}
	// The external host hangs off the router on its own point-to-point subnet.
	ext := t.External
	if err := veth(ctx, ext.Netns, "eth0", rt, "external"); err != nil {
		return err
	}
	steps := [][]string{
		{ext.Netns, "addr", "add", netip.PrefixFrom(ext.Addr, ext.Prefix).String(), "dev", "eth0"},
		{ext.Netns, "link", "set", "eth0", "up"},
		{ext.Netns, "route", "add", "default", "via", ext.Gateway.String()},
		{rt, "addr", "add", t.ExternalGW.String(), "dev", "external"},
		{rt, "link", "set", "external", "up"},
	}
	if t.OriginPrefix.IsValid() {
		// The prefix behind the external host: on its loopback, so it
		// answers every address of it. The ToR originates the route.
		steps = append(steps, []string{ext.Netns, "addr", "add", netip.PrefixFrom(t.OriginAddr, t.OriginPrefix.Bits()).String(), "dev", "lo"})
	}
	for _, step := range steps {
		if err := ipn(ctx, step[0], step[1:]...); err != nil {
			return err
		}
	}
	if ext.Addr6.IsValid() {
		if err := addAddr6(ctx, ext.Netns, "eth0", netip.PrefixFrom(ext.Addr6, t.ExternalGW6.Bits()), ext.Gateway6); err != nil {
			return err
		}
		if err := addAddr6(ctx, rt, "external", t.ExternalGW6, netip.Addr{}); err != nil {
			return err
		}
	}
	if err := sysctl(ctx, rt, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	for _, n := range t.Nodes {
		if err := sysctl(ctx, n.Netns, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
	}
	if t.HasIPv6() {
		// The router forwards IPv6 between the lab's subnets and the
		// external link, its only routes (connected ones): there is no
		// default route, so nothing leaves the lab. Nodes forward for
		// their pods, as with IPv4.
		for _, ns := range append([]string{rt}, nodeNetnses(t)...) {
			if err := sysctl(ctx, ns, "net.ipv6.conf.all.forwarding", "1"); err != nil {
				return err
			}
		}
	}
	return nil
}

func nodeNetnses(t Topology) []string {
	out := make([]string, 0, len(t.Nodes))
	for _, n := range t.Nodes {
		out = append(out, n.Netns)
	}
	return out
}

// addAddr6 adds addr to ifName in ns without duplicate address detection
// (the lab plans every address; DAD would only hold it tentative for a
// second or two) and, if gw is valid, the IPv6 default route via gw.
func addAddr6(ctx context.Context, ns, ifName string, addr netip.Prefix, gw netip.Addr) error {
	if err := ipn(ctx, ns, "-6", "addr", "add", addr.String(), "dev", ifName, "nodad"); err != nil {
		return err
	}
	if gw.IsValid() {
		return ipn(ctx, ns, "-6", "route", "add", "default", "via", gw.String(), "dev", ifName)
	}
	return nil
}

// attach connects namespace ns (interface ifName, address addr, default route
// via gw if valid) to bridge in the switch namespace through a veth whose
// switch end is swName.
func attach(ctx context.Context, t Topology, ns, ifName, swName, bridge string, addr netip.Prefix, gw netip.Addr) error {
	if err := veth(ctx, ns, ifName, t.SwitchNetns, swName); err != nil {
		return err
	}
	steps := [][]string{
		{t.SwitchNetns, "link", "set", swName, "master", bridge},
		{t.SwitchNetns, "link", "set", swName, "up"},
		{ns, "addr", "add", addr.String(), "dev", ifName},
		{ns, "link", "set", ifName, "up"},
	}
	if gw.IsValid() {
		steps = append(steps, []string{ns, "route", "add", "default", "via", gw.String()})
	}
	for _, s := range steps {
		if err := ipn(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// HostPrefixes returns the IPv4 addresses and routes of the machine's own
// network namespace, to check the lab ranges against.
func HostPrefixes(ctx context.Context) ([]netip.Prefix, error) {
	return hostPrefixes(ctx, "-4", netip.Addr.Is4, func(a netip.Addr) bool { return a.Is4() && !a.IsLoopback() })
}

// HostPrefixes6 returns the machine's global IPv6 addresses and routes
// (not loopback, link-local or multicast).
func HostPrefixes6(ctx context.Context) ([]netip.Prefix, error) {
	global := func(a netip.Addr) bool {
		return a.Is6() && !a.Is4In6() && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsMulticast()
	}
	return hostPrefixes(ctx, "-6", global, global)
}

// hostPrefixes parses `ip FAMILY addr` and `ip FAMILY route` for the
// prefixes whose address keepPrefix accepts and the addresses keepAddr does.
func hostPrefixes(ctx context.Context, family string, keepPrefix, keepAddr func(netip.Addr) bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, args := range [][]string{{family, "-o", "addr", "show"}, {family, "route", "show", "table", "all"}} {
		b, err := exec.CommandContext(ctx, "ip", args...).Output()
		if err != nil {
			return nil, fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		for _, f := range strings.Fields(string(b)) {
			if p, err := netip.ParsePrefix(f); err == nil && keepPrefix(p.Addr()) {
				out = append(out, p.Masked())
			} else if a, err := netip.ParseAddr(f); err == nil && keepAddr(a) {
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return out, nil
}
