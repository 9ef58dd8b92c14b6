// Package uninstall removes from a node everything Trellis made
// (`trellis-agent --uninstall`): the CNI conflist (only Trellis's), the
// plugin binary, the node state file, the fast path's tc filters (and with
// them its programs), every nftables table whose name starts with
// "trellis", every route tagged with Trellis's route protocol, the VXLAN
// devices (over the IPv4 and the IPv6 underlay), the WireGuard device and the node's WireGuard key file, the accepts Trellis appended to iptables' and ip6tables' FORWARD chains on hosts
// whose FORWARD policy is DROP (internal/hostfw), and the sysctls Trellis
// changed and recorded (restored to their previous values). It is idempotent: a second run finds nothing and
// succeeds. Pods wired before keep their veths, addresses and host routes
// until they are deleted; the IPAM directory stays for them.
package uninstall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/hostfw"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

// TablePrefix marks the nftables tables Trellis owns (trellis-policy,
// trellis-masq, and any later one).
const TablePrefix = "trellis"

// Options say where Trellis's files are and which kernel to clean.
type Options struct {
	CNIConfDir    string
	CNIBinDir     string
	NodeStateFile string
	VXLANDevice   string
	// VXLANDevice6 is the VXLAN device over the IPv6 underlay ("": none).
	VXLANDevice6 string
	// WireGuardDevice is the WireGuard device (a WireGuard or TUN link);
	// WireGuardKeyFile the node's private key.
	WireGuardDevice  string
	WireGuardKeyFile string
	// Sysctls restores recorded sysctls (Restore below).
	Sysctls Sysctls
	// RecordFile is the sysctl record (RecordPath of the state dir).
	RecordFile string
	// Handle is the netlink handle (nil: the calling thread's namespace).
	Handle *netlink.Handle
	// Tables lists and deletes nftables tables.
	Tables Tables
	// Forward edits iptables' and ip6tables' FORWARD chains (hostfw.Exec; nil: left alone).
	Forward hostfw.NFT
}

// Run removes everything, continuing past failures, and returns them all.
// Order: the runtime stops using Trellis first (conflist, plugin), then the
// datapath goes (fast path before routes, so no redirect targets a
// vanished route).
func Run(ctx context.Context, o Options) error {
	logger := klog.FromContext(ctx).WithName("uninstall")
	h := o.Handle
	if h == nil {
		h = &netlink.Handle{}
	}
	var errs []error
	step := func(what string, f func() (int, error)) {
		n, err := f()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			logger.Error(err, "Uninstall step failed", "step", what)
			return
		}
		logger.Info("Removed", "what", what, "count", n)
	}
	step("CNI conflist", func() (int, error) { return removeConflists(ctx, o.CNIConfDir) })
	step("CNI plugin binary", func() (int, error) { return removeFile(filepath.Join(o.CNIBinDir, nodesetup.PluginName)) })
	step("node state file", func() (int, error) { return removeFile(o.NodeStateFile) })
	step("fast path tc filters and programs", func() (int, error) { return (&fastpath.Kernel{Handle: o.Handle}).DetachAll() })
	step("nftables tables "+TablePrefix+"*", func() (int, error) { return removeTables(ctx, o.Tables) })
	if o.Forward != nil {
		step("accepts in ip and ip6 filter FORWARD", func() (int, error) { return hostfw.Remove(ctx, o.Forward) })
	}
	step("routes with protocol trellis", func() (int, error) { return removeRoutes(h) })
	step("VXLAN device "+o.VXLANDevice, func() (int, error) { return removeLink(h, o.VXLANDevice, "vxlan") })
	if o.VXLANDevice6 != "" {
		step("VXLAN device "+o.VXLANDevice6, func() (int, error) { return removeLink(h, o.VXLANDevice6, "vxlan") })
	}
	if o.WireGuardDevice != "" {
		step("WireGuard device "+o.WireGuardDevice, func() (int, error) { return removeLink(h, o.WireGuardDevice, "wireguard", "tuntap") })
	}
	if o.WireGuardKeyFile != "" {
		step("WireGuard key file", func() (int, error) { return removeFile(o.WireGuardKeyFile) })
	}
	step("recorded sysctls", func() (int, error) { return Restore(o.Sysctls, o.RecordFile) })
	return errors.Join(errs...)
}

func removeFile(path string) (int, error) {
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return 1, nil
}

// removeConflists removes the conflists Trellis writes (any of the names
// it may take) when they are Trellis's: their plugin is trellis-cni. A
// foreign file with such a name stays.
func removeConflists(ctx context.Context, dir string) (int, error) {
	n := 0
	var errs []error
	for _, name := range nodesetup.ConflistNames {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !nodesetup.IsOwnConflist(data) {
			klog.FromContext(ctx).Info("Leaving a CNI config that is not Trellis's", "path", path)
			continue
		}
		c, err := removeFile(path)
		n += c
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// bgpRouteProtocol tags the routes BGP learned (internal/bgp/kernelroutes).
const bgpRouteProtocol = 159

// removeRoutes deletes the routing controller's routes (protocol 158) and
// the BGP-learned ones (159).
func removeRoutes(h *netlink.Handle) (int, error) {
	n := 0
	for _, proto := range []netlink.RouteProtocol{netlinkprog.RouteProtocol, bgpRouteProtocol} {
		filter := &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_UNSPEC}
		routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return n, fmt.Errorf("list routes of protocol %d: %w", proto, err)
		}
		for i := range routes {
			if err := h.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
				return n, fmt.Errorf("delete route %s: %w", routes[i], err)
			}
			n++
		}
	}
	return n, nil
}

// removeLink deletes the device name when it is of one of the types
// Trellis creates it as; a device of another type is left in place (an
// error: the name is Trellis's, the device is not).
func removeLink(h *netlink.Handle, name string, types ...string) (int, error) {
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("find %s: %w", name, err)
	}
	if !slices.Contains(types, link.Type()) {
		return 0, fmt.Errorf("%s is a %s device, not Trellis's (%s): left in place", name, link.Type(), strings.Join(types, " or "))
	}
	if err := h.LinkDel(link); err != nil {
		return 0, fmt.Errorf("delete %s: %w", name, err)
	}
	return 1, nil
}

func removeTables(ctx context.Context, t Tables) (int, error) {
	tables, err := t.List(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, tb := range tables {
		if !strings.HasPrefix(tb.Name, TablePrefix) {
			continue
		}
		if err := t.Delete(ctx, tb); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Table is an nftables table.
type Table struct{ Family, Name string }

// Tables lists and deletes nftables tables.
type Tables interface {
	List(ctx context.Context) ([]Table, error)
	Delete(ctx context.Context, t Table) error
}

// NFT implements Tables with the nft command (the one knftables runs too),
// in the calling thread's network namespace.
type NFT struct{}

// List returns every table.
func (NFT) List(ctx context.Context) ([]Table, error) {
	out, err := hostfw.Exec{}.Run(ctx, "-j", "list", "tables")
	if err != nil {
		return nil, err
	}
	return parseTables(out)
}

// Delete deletes t with everything in it.
func (NFT) Delete(ctx context.Context, t Table) error {
	_, err := hostfw.Exec{}.Run(ctx, "delete", "table", t.Family, t.Name)
	return err
}

func parseTables(out []byte) ([]Table, error) {
	var doc struct {
		Nftables []struct {
			Table *struct {
				Family string `json:"family"`
				Name   string `json:"name"`
			} `json:"table"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("parse nft -j list tables: %w", err)
	}
	var ts []Table
	for _, e := range doc.Nftables {
		if e.Table != nil {
			ts = append(ts, Table{Family: e.Table.Family, Name: e.Table.Name})
		}
	}
	return ts, nil
}
