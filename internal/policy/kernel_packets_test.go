//go:build kernel

package policy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
)

// kernelNode is one throwaway node namespace with pods wired the way the
// plugin wires them: veth trl… on the host side, pod /32, host /32 route,
// pod default route via 169.254.1.1 onlink with a static neighbour entry.
type kernelNode struct {
	t    *testing.T
	node ns.NetNS
	pods map[string]ns.NetNS
}

// singleNodeWorld fails loudly without root and returns a world of one node.
func singleNodeWorld(t *testing.T) *world {
	if os.Geteuid() != 0 {
		t.Fatal("FAIL: this kernel test needs root (network namespaces, veth, nftables)")
	}
	w := newWorld()
	w.nodes = []string{"n1"}
	return w
}

// newKernelNode makes the node namespace: forwarding on, lo up with a node
// address (the source of the node's ARP requests towards pods).
func newKernelNode(t *testing.T) *kernelNode {
	k := &kernelNode{t: t, node: newNS(t), pods: map[string]ns.NetNS{}}
	if err := k.node.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("192.168.0.1"), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("fd00:192::1"), Mask: net.CIDRMask(128, 128)}}); err != nil {
			return err
		}
		// As the plugin sets the host ends of IPv6 pods: no duplicate
		// address detection, so their link-local addresses (the source of
		// the node's neighbour solicitations) are usable at once.
		for _, f := range []string{"ipv6/conf/all/accept_dad", "ipv6/conf/default/accept_dad"} {
			if err := writeSysctl("/proc/sys/net/"+f, "0"); err != nil {
				return err
			}
		}
		if err := writeSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
		return writeSysctl("/proc/sys/net/ipv4/ip_forward", "1")
	}); err != nil {
		t.Fatal(err)
	}
	return k
}

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close(); _ = testutils.UnmountNS(n) })
	return n
}

func writeSysctl(path, v string) error { return os.WriteFile(path, []byte(v), 0o644) }

func (k *kernelNode) addPod(name, iface string, ips ...netip.Addr) {
	t := k.t
	podNS := newNS(t)
	k.pods[name] = podNS
	var hostMAC net.HardwareAddr
	if err := podNS.Do(func(ns.NetNS) error {
		return writeSysctl("/proc/sys/net/ipv6/conf/default/accept_dad", "0") // the pod end's link-local address
	}); err != nil {
		t.Fatal(err)
	}
	err := k.node.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: iface}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNS.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		// The plugin puts the host side in its namespace's device group.
		podNamespace, _, _ := strings.Cut(name, "/")
		if err := netlink.LinkSetGroup(l, int(podlink.GroupForNamespace(podNamespace))); err != nil {
			return err
		}
		hostMAC = l.Attrs().HardwareAddr
		for _, ip := range ips {
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK,
				Dst: hostPrefix(ip)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = podNS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		for _, n := range []string{"lo", "eth0"} {
			if ll, err := netlink.LinkByName(n); err == nil {
				_ = netlink.LinkSetUp(ll)
			}
		}
		for _, ip := range ips {
			if err := netlink.AddrAdd(l, podAddr(ip)); err != nil {
				return err
			}
			// The plugin's gateways: 169.254.1.1 and fe80::1, permanent
			// neighbours mapping to the host end.
			gw, fam, def := net.ParseIP("169.254.1.1"), netlink.FAMILY_V4, &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
			if ip.Is6() {
				gw, fam, def = net.ParseIP("fe80::1"), netlink.FAMILY_V6, &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
			}
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT,
				IP: gw, HardwareAddr: hostMAC}); err != nil {
				return fmt.Errorf("gateway neighbour: %w", err)
			}
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: def, Gw: gw,
				Flags: int(netlink.FLAG_ONLINK)}); err != nil {
				return fmt.Errorf("default route via %s: %w", gw, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// listen opens a TCP listener inside the pod (the socket stays in the pod's
// namespace after Do returns) and serves each connection with handle.
func (k *kernelNode) listen(name string, port int, handle func(net.Conn)) {
	var ln net.Listener
	err := k.pods[name].Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)) // both families
		return err
	})
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}

// serve accepts and closes connections (a reachability target).
func (k *kernelNode) serve(name string, port int) {
	k.listen(name, port, func(c net.Conn) { c.Close() })
}

// apply compiles w for node n1 and programs it into the node namespace.
func (k *kernelNode) apply(w *world) {
	k.t.Helper()
	if err := k.node.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, policy.TableName)
		if err != nil {
			return err
		}
		_, err = policy.Apply(context.Background(), nft, policy.Compile(w.snapshot("n1")))
		return err
	}); err != nil {
		k.t.Fatalf("program the kernel: %v", err)
	}
}

// connect reports whether a TCP connection from pod src (optionally from a
// given source address) to dst:port succeeds.
func (k *kernelNode) connect(src string, from netip.Addr, dst netip.Addr, port int) bool {
	ok := false
	_ = k.pods[src].Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		if from.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
		}
		c, err := d.Dial("tcp", netip.AddrPortFrom(dst, uint16(port)).String())
		if err == nil {
			ok = true
			c.Close()
		}
		return nil
	})
	return ok
}

// TestKernelPacketsMatchTracer programs a real node namespace with the
// compiled table and checks real TCP connections between real pod
// namespaces against the tracer and the oracle, plus anti-spoofing with a
// real spoofed source address and a pending (unprogrammed) pod.
func TestKernelPacketsMatchTracer(t *testing.T) {
	w := singleNodeWorld(t)
	w.addNamespace("x", map[string]string{"ns": "x"})
	w.addNamespace("y", map[string]string{"ns": "y"})
	named := corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}
	w.addPod("x", "a", "n1", "10.244.1.10", false, map[string]string{"pod": "a"}, named)
	w.addPod("x", "b", "n1", "10.244.1.11", false, map[string]string{"pod": "b"})
	w.addPod("y", "c", "n1", "10.244.1.12", false, map[string]string{"pod": "c"}, named)
	// x/a: ingress only from x/b on 80 and the named port; y/c: egress only to x/a.
	w.addPolicy(np("x", "a-in", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
		From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel("pod", "b")}},
		Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80), nil), port(tcp, intstr.FromString("http"), nil)}}}}))
	w.addPolicy(np("y", "c-out", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "c"), PolicyTypes: egressOnly,
		Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "x"), PodSelector: sel("pod", "a")}}}}}))

	k := newKernelNode(t)
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		k.addPod(p.Namespace+"/"+p.Name, ifaceFor(p), netip.MustParseAddr(p.Status.PodIP))
		for _, port := range []int{80, 81, 8080} {
			k.serve(p.Namespace+"/"+p.Name, port)
		}
	}
	// The agent finds pod interfaces from the plugin's host routes.
	if err := k.node.Do(func(ns.NetNS) error {
		list, err := policy.Lister{}.PodInterfaces()
		if err != nil {
			return err
		}
		got := map[netip.Addr]string{}
		for _, i := range list {
			for _, a := range i.Addrs {
				got[a] = i.Name
			}
		}
		for i := range w.cluster.Pods {
			p := &w.cluster.Pods[i]
			if got[netip.MustParseAddr(p.Status.PodIP)] != ifaceFor(p) {
				return fmt.Errorf("pod interfaces: %s -> %q, want %q (all: %v)", p.Status.PodIP, got[netip.MustParseAddr(p.Status.PodIP)], ifaceFor(p), got)
			}
		}
		if len(got) != len(w.cluster.Pods) {
			return fmt.Errorf("pod interfaces: found %d pods, want %d: %v", len(got), len(w.cluster.Pods), got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w.program(t) // the fake, for the tracer
	k.apply(w)

	var mismatches []string
	allowed := 0
	for i := range w.cluster.Pods {
		for j := range w.cluster.Pods {
			if i == j {
				continue
			}
			src, dst := &w.cluster.Pods[i], &w.cluster.Pods[j]
			for _, port := range []int{80, 81, 8080} {
				real := k.connect(src.Namespace+"/"+src.Name, netip.Addr{}, netip.MustParseAddr(dst.Status.PodIP), port)
				traced, err := w.traced(src, dst, corev1.ProtocolTCP, int32(port))
				if err != nil {
					t.Fatal(err)
				}
				want := w.cluster.Allowed(src, dst, corev1.ProtocolTCP, int32(port))
				if real != traced || real != want {
					mismatches = append(mismatches, fmt.Sprintf("%s/%s -> %s/%s tcp/%d: kernel=%v tracer=%v oracle=%v",
						src.Namespace, src.Name, dst.Namespace, dst.Name, port, real, traced, want))
				}
				if real {
					allowed++
				}
			}
		}
	}
	if len(mismatches) > 0 {
		t.Fatalf("kernel, tracer and oracle disagree:\n%s", strings.Join(mismatches, "\n"))
	}
	if allowed == 0 || allowed == 18 {
		t.Fatalf("degenerate scenario: %d of 18 connections allowed", allowed)
	}

	// Per-policy counters: x/a's ingress group counted allowed and denied
	// new connections in the kernel.
	d := policy.Compile(w.snapshot("n1"))
	if err := k.node.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, policy.TableName)
		if err != nil {
			return err
		}
		counters, err := nft.ListCounters(context.Background())
		if err != nil {
			return err
		}
		vals := map[string]uint64{}
		for _, c := range counters {
			if c != nil && c.Packets != nil {
				vals[c.Name] = *c.Packets
			}
		}
		found := false
		for _, g := range d.Groups {
			if g.Direction == "ingress" && len(g.Policies) == 1 && g.Policies[0] == "x/a-in" {
				found = true
				if vals[g.AllowCounter] == 0 || vals[g.DenyCounter] == 0 {
					return fmt.Errorf("x/a-in counters: allow=%d deny=%d, want both > 0", vals[g.AllowCounter], vals[g.DenyCounter])
				}
			}
		}
		if !found {
			return fmt.Errorf("no ingress group for x/a-in in %v", d.Groups)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Anti-spoofing: x/b may reach y/c:81 from its own address, but not from
	// a second address it adds to its interface.
	spoof := netip.MustParseAddr("10.244.1.99")
	k.addAddr("x/b", spoof)
	yc := netip.MustParseAddr("10.244.1.12")
	if !k.connect("x/b", netip.Addr{}, yc, 81) {
		t.Fatal("x/b -> y/c:81 from its own address should pass")
	}
	if k.connect("x/b", spoof, yc, 81) {
		t.Fatal("x/b -> y/c:81 from a spoofed source address passed")
	}

	// First-packet isolation, pods wired by the plugin but not yet
	// programmed by the agent. x has an ingress policy, y an egress one.
	xp, yp, up := netip.MustParseAddr("10.244.1.50"), netip.MustParseAddr("10.244.1.51"), netip.MustParseAddr("10.244.1.52")
	xb := netip.MustParseAddr("10.244.1.11")
	k.addPod("x/pending", "trl0pending00", xp)
	k.addPod("y/pending", "trl0pending01", yp)
	k.addPod("/pending", "trl0pending02", up) // namespace unknown: group 0
	for _, n := range []string{"x/pending", "y/pending", "/pending"} {
		k.serve(n, 80)
	}
	checks := []struct {
		what     string
		src      string
		from     netip.Addr
		dst      netip.Addr
		port     int
		expected bool
	}{
		{"pending pod in x (no egress policy there) sends", "x/pending", netip.Addr{}, yc, 81, true},
		{"pending pod in x (ingress policy there) receives", "x/b", netip.Addr{}, xp, 80, false},
		{"pending pod in y (egress policy there) sends", "y/pending", netip.Addr{}, xb, 80, false},
		{"pending pod in y (no ingress policy there) receives", "x/b", netip.Addr{}, yp, 80, true},
		{"pending pod of unknown namespace sends", "/pending", netip.Addr{}, xb, 80, false},
		{"pending pod of unknown namespace receives", "x/b", netip.Addr{}, up, 80, false},
	}
	for _, c := range checks {
		if got := k.connect(c.src, c.from, c.dst, c.port); got != c.expected {
			t.Errorf("%s: connected=%v, want %v", c.what, got, c.expected)
		}
	}
	// Anti-spoofing holds for an open pending pod too (reverse-path check).
	spoof2 := netip.MustParseAddr("10.244.1.98")
	k.addAddr("x/pending", spoof2)
	if k.connect("x/pending", spoof2, yc, 81) {
		t.Fatal("open pending pod -> y/c:81 from a spoofed source address passed")
	}
}

// addAddr adds a second address to a pod's eth0 (to spoof with).
func (k *kernelNode) addAddr(name string, a netip.Addr) {
	k.t.Helper()
	if err := k.pods[name].Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, podAddr(a))
	}); err != nil {
		k.t.Fatal(err)
	}
}

// hostPrefix is the /32 or /128 of a.
func hostPrefix(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// podAddr is a pod address as the plugin adds it (IPv6: never tentative).
func podAddr(a netip.Addr) *netlink.Addr {
	addr := &netlink.Addr{IPNet: hostPrefix(a)}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr
}

// serveEcho echoes what each connection sends.
func (k *kernelNode) serveEcho(name string, port int) {
	k.listen(name, port, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
}

func roundTrip(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, got %q", msg, buf)
	}
	return nil
}

// TestKernelEstablishedConnectionsSurvivePolicyChange proves the documented
// choice: a connection allowed when it started keeps working after a policy
// starts denying it; a new identical connection is refused. It also applies
// the new state the way a restarted agent does (fresh Apply on the state it
// finds) while the connection is open.
func TestKernelEstablishedConnectionsSurvivePolicyChange(t *testing.T) {
	w := singleNodeWorld(t)
	w.addNamespace("x", nil)
	w.addPod("x", "a", "n1", "10.244.1.10", false, map[string]string{"pod": "a"})
	w.addPod("x", "b", "n1", "10.244.1.11", false, map[string]string{"pod": "b"})
	k := newKernelNode(t)
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		k.addPod(p.Namespace+"/"+p.Name, ifaceFor(p), netip.MustParseAddr(p.Status.PodIP))
	}
	k.serveEcho("x/a", 9000)
	apply := func() {
		t.Helper()
		k.apply(w)
	}
	apply() // no policies yet
	xa := netip.MustParseAddr("10.244.1.10")
	var conn net.Conn
	if err := k.pods["x/b"].Do(func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(xa, 9000).String(), time.Second)
		return err
	}); err != nil {
		t.Fatalf("x/b -> x/a:9000 before any policy: %v", err)
	}
	defer conn.Close()
	if err := roundTrip(conn, "before"); err != nil {
		t.Fatal(err)
	}

	w.addPolicy(np("x", "deny-a", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), PolicyTypes: ingressOnly}))
	apply()
	apply() // and again, as a restarted agent would, with the connection open
	if err := roundTrip(conn, "after"); err != nil {
		t.Fatalf("established connection broke after the policy started denying it: %v", err)
	}
	if k.connect("x/b", netip.Addr{}, xa, 9000) {
		t.Fatal("a new connection was admitted after the deny policy")
	}
}
