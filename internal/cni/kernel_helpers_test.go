//go:build kernel

package cni_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/ipam"
	"github.com/trellisnet/trellis/internal/podlink"
)

// pluginDir holds the trellis-cni binary built for this test run.
var pluginDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the kernel tests need root (network namespaces, veth, routes)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "trellis-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := cnirunner.BuildPlugin(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func uniq() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// fixture is one throwaway "node": a network namespace with forwarding on
// and a host address on a dummy interface, plus a libcni runner whose calls
// (and so the plugin processes) run inside it.
type fixture struct {
	t        *testing.T
	node     ns.NetNS
	hostAddr netip.Addr
	// hostAddr6 is the node's own IPv6 address (on loopback).
	hostAddr6 netip.Addr
	dataDir   string
	stateDir  string
	runner    *cnirunner.Runner
	version   string
}

type confOpts struct {
	version string
	subnets []string // nil: use the node state file
	// forwardingOff leaves the node's IPv4 forwarding off.
	forwardingOff bool
	// requireDataplane sets the agent's dataplane gate in the config.
	requireDataplane bool
}

func newFixture(t *testing.T, o confOpts) *fixture {
	t.Helper()
	if o.version == "" {
		o.version = "1.1.0"
	}
	name := "trl-node-" + uniq()
	node, err := cnirunner.NewNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		node.Close()
		if err := cnirunner.DeleteNetNS(name); err != nil {
			t.Error(err)
		}
	})
	forward := "1"
	if o.forwardingOff {
		forward = "0"
	}
	if err := cnirunner.Sysctl(node, "net/ipv4/ip_forward", forward); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, node: node, hostAddr: netip.MustParseAddr("192.0.2.1"), hostAddr6: netip.MustParseAddr("2001:db8::1"), version: o.version}
	f.dataDir = t.TempDir()
	f.stateDir = t.TempDir()
	err = node.Do(func(ns.NetNS) error {
		// The node's own address, on loopback (this kernel has no dummy links).
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		// An uplink, as a node has one: pod interfaces never get the
		// node's first interface indexes, where a host end could share
		// its pod end's index (the kernel then takes the pair for a
		// plain device and applies its carrier change up to 1 s late).
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul0p"}); err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: podlink.HostPrefix(f.hostAddr)}); err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: podlink.HostPrefix(f.hostAddr6), Flags: unix.IFA_F_NODAD})
	})
	if err != nil {
		t.Fatal(err)
	}
	plugin := map[string]any{
		"type":          "trellis-cni",
		"ipam":          map[string]any{"dataDir": f.dataDir},
		"nodeStateFile": filepath.Join(f.stateDir, "node-state.json"),
		"logFile":       filepath.Join(f.stateDir, "cni.log"),
	}
	if o.requireDataplane {
		plugin["requireDataplane"] = true
	}
	if o.subnets != nil {
		plugin["ipam"].(map[string]any)["subnets"] = o.subnets
		plugin["mtu"] = 1400
	}
	conflist, _ := json.Marshal(map[string]any{"cniVersion": o.version, "name": "trellis-test", "plugins": []any{plugin}})
	f.runner, err = cnirunner.New(conflist, []string{pluginDir}, t.TempDir(), node)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type pod struct {
	id   string
	ns   ns.NetNS
	name string
	// addr is the result's first address; addrs all of them, in order.
	addr  netip.Addr
	addrs []netip.Addr
}

// addrOf returns the pod's address of the family of like.
func (p *pod) addrOf(t *testing.T, like netip.Addr) netip.Addr {
	t.Helper()
	for _, a := range p.addrs {
		if a.Is4() == like.Is4() {
			return a
		}
	}
	t.Fatalf("pod %s has no address of the family of %s (has %v)", p.id, like, p.addrs)
	return netip.Addr{}
}

func (f *fixture) newPodNS() *pod {
	f.t.Helper()
	name := "trl-pod-" + uniq()
	n, err := cnirunner.NewNetNS(name)
	if err != nil {
		f.t.Fatal(err)
	}
	p := &pod{id: "ctr-" + name, ns: n, name: name}
	f.t.Cleanup(func() {
		n.Close()
		_ = cnirunner.DeleteNetNS(name)
	})
	return p
}

func (f *fixture) add(p *pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := f.runner.Add(ctx, p.id, p.ns.Path(), "eth0")
	if err != nil {
		return err
	}
	var out struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	data, _ := json.Marshal(res)
	if err := json.Unmarshal(data, &out); err != nil || len(out.IPs) == 0 {
		return fmt.Errorf("result without ips: %s", data)
	}
	p.addrs = nil
	for _, ip := range out.IPs {
		pfx, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			return err
		}
		p.addrs = append(p.addrs, pfx.Addr())
	}
	p.addr = p.addrs[0]
	return nil
}

func (f *fixture) mustAdd(p *pod) {
	f.t.Helper()
	if err := f.add(p); err != nil {
		f.t.Fatalf("ADD %s (cniVersion %s): %v", p.id, f.version, err)
	}
}

// addPods wires n new pods.
func (f *fixture) addPods(n int) []*pod {
	f.t.Helper()
	var pods []*pod
	for range n {
		p := f.newPodNS()
		f.mustAdd(p)
		pods = append(pods, p)
	}
	return pods
}

func (f *fixture) del(p *pod) error {
	return f.runner.Del(context.Background(), p.id, p.ns.Path(), "eth0")
}

// allocations returns what the IPAM store holds.
func (f *fixture) allocations() []ipam.Allocation {
	f.t.Helper()
	var out []ipam.Allocation
	err := ipam.NewStore(f.dataDir, "trellis-test").View(context.Background(), func(s *ipam.State) error {
		out = append(out, s.Allocations...)
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// hostLinks lists the trl* interfaces in the node namespace.
func (f *fixture) hostLinks() []string {
	f.t.Helper()
	var names []string
	err := f.node.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if podlink.IsHostName(l.Attrs().Name) {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return names
}

// podRoutes lists the host routes to pod addresses (10.x/32, fd00:x/128)
// in the node namespace.
func (f *fixture) podRoutes() []string {
	f.t.Helper()
	var out []string
	err := f.node.Do(func(ns.NetNS) error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
		for _, r := range routes {
			if r.Dst != nil && (strings.HasPrefix(r.Dst.String(), "10.") || strings.HasPrefix(r.Dst.String(), "fd00:")) {
				out = append(out, r.Dst.String())
			}
		}
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// serveEcho starts TCP and UDP echo servers inside n on port; they stop at
// test cleanup.
func serveEcho(t *testing.T, n ns.NetNS, port int) {
	t.Helper()
	var tl net.Listener
	var ul net.PacketConn
	err := n.Do(func(ns.NetNS) error {
		var err error
		if tl, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close(); ul.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = ul.WriteTo(buf[:n], a)
		}
	}()
}

// echo sends a message over proto from inside n to addr:port and expects it back.
func echo(n ns.NetNS, proto string, addr netip.Addr, port int) error {
	return n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout(proto, netip.AddrPortFrom(addr, uint16(port)).String(), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		msg := []byte("trellis-" + proto)
		if _, err := c.Write(msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("%s echo from %s: %w", proto, addr, err)
		}
		if string(buf) != string(msg) {
			return fmt.Errorf("%s echo from %s: got %q", proto, addr, buf)
		}
		return nil
	})
}

func mustReach(t *testing.T, from ns.NetNS, to netip.Addr, port int, what string) {
	t.Helper()
	for _, proto := range []string{"tcp", "udp"} {
		if err := echo(from, proto, to, port); err != nil {
			t.Fatalf("%s over %s: %v", what, proto, err)
		}
	}
}

func mustPrefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// hostIface is the pod's host-side interface as podlink reads it.
func (f *fixture) hostIface(p *pod) podlink.Interface {
	f.t.Helper()
	var ifaces []podlink.Interface
	err := f.node.Do(func(ns.NetNS) error {
		var err error
		ifaces, err = podlink.List(nil)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, i := range ifaces {
		if i.Name == podlink.HostName(p.id, "eth0") {
			return i
		}
	}
	f.t.Fatalf("no host interface %s for %s", podlink.HostName(p.id, "eth0"), p.id)
	return podlink.Interface{}
}
