//go:build kernel

package policy_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// TestKernelAntiSpoofWithoutNetworkPolicy: with enforcement off
// (networkPolicy: false) the controller still keeps the strict
// per-interface source check, and only that: a table left by an earlier
// run with enforcement on loses its policy chains, a pod reaches a pod a
// policy used to isolate from its own address, and never from a spoofed
// one.
func TestKernelAntiSpoofWithoutNetworkPolicy(t *testing.T) {
	w := singleNodeWorld(t)
	w.addNamespace("x", nil)
	w.addPod("x", "a", "n1", "10.244.1.10", false, map[string]string{"pod": "a"})
	w.addPod("x", "b", "n1", "10.244.1.11", false, map[string]string{"pod": "b"})
	w.addPolicy(np("x", "deny-a", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), PolicyTypes: ingressOnly}))
	k := newKernelNode(t)
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		k.addPod(p.Namespace+"/"+p.Name, ifaceFor(p), netip.MustParseAddr(p.Status.PodIP))
	}
	k.serve("x/a", 80)
	xa := netip.MustParseAddr("10.244.1.10")
	k.apply(w) // an earlier run, enforcement on
	if k.connect("x/b", netip.Addr{}, xa, 80) {
		t.Fatal("setup: the deny policy does not hold with enforcement on")
	}

	c, err := policy.New(policy.Config{Disabled: true, NFT: mustNFT(t, k.node)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second sync starts from its own table
		if err := k.node.Do(func(ns.NetNS) error { return c.Sync(context.Background()) }); err != nil {
			t.Fatalf("disabled sync %d: %v", i, err)
		}
	}
	if got, want := listTable(t, k.node), render(t, policy.AntiSpoofOnly(0)); got != want {
		t.Fatalf("table with enforcement off:\n%s\nwant (anti-spoofing only):\n%s", got, want)
	}
	if !k.connect("x/b", netip.Addr{}, xa, 80) {
		t.Fatal("x/b -> x/a:80 from its own address failed with enforcement off")
	}
	// Spoofed sources, seen arriving or not at the destination (UDP: a
	// spoofed TCP handshake fails anyway, its answer goes elsewhere): an
	// address no pod has, and another pod's.
	xb, yc := netip.MustParseAddr("10.244.1.11"), netip.MustParseAddr("10.244.1.12")
	for _, spoof := range []netip.Addr{netip.MustParseAddr("10.244.1.99"), yc} {
		k.addAddr("x/b", spoof)
	}
	node := netip.MustParseAddr("192.168.0.1")
	if !k.udpArrives("x/b", xb, k.pods["x/a"], xa) || !k.udpArrives("x/b", xb, k.node, node) {
		t.Fatal("UDP from x/b's own address did not arrive (pod, node) with enforcement off")
	}
	for _, spoof := range []netip.Addr{netip.MustParseAddr("10.244.1.99"), yc} {
		if k.udpArrives("x/b", spoof, k.pods["x/a"], xa) {
			t.Errorf("UDP x/b -> x/a from spoofed source %s arrived with enforcement off", spoof)
		}
		if k.udpArrives("x/b", spoof, k.node, node) {
			t.Errorf("UDP x/b -> node from spoofed source %s arrived with enforcement off", spoof)
		}
	}
}

// udpArrives reports whether a UDP datagram that pod src sends from
// address from reaches a socket on dst:port in namespace dstNS.
func (k *kernelNode) udpArrives(src string, from netip.Addr, dstNS ns.NetNS, dst netip.Addr) bool {
	k.t.Helper()
	var ln net.PacketConn
	if err := dstNS.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.ListenPacket("udp", netip.AddrPortFrom(dst, 0).String())
		return err
	}); err != nil {
		k.t.Fatal(err)
	}
	defer ln.Close()
	to := ln.LocalAddr().(*net.UDPAddr)
	if err := k.pods[src].Do(func(ns.NetNS) error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: from.AsSlice()}, to)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < 3; i++ {
			_, _ = c.Write([]byte("spoof?"))
		}
		return nil
	}); err != nil {
		k.t.Fatal(err)
	}
	_ = ln.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 64)
	for {
		_, addr, err := ln.ReadFrom(buf)
		if err != nil {
			return false
		}
		if a, ok := addr.(*net.UDPAddr); ok && a.IP.Equal(from.AsSlice()) {
			return true
		}
	}
}

// foreignChange is one change of the ruleset made by someone else.
type foreignChange struct {
	what string
	nft  string // nft -f input
	// thenTouch changes a pod right after the foreign change, so that an
	// API-driven sync races the repair.
	thenTouch bool
}

// TestKernelPolicyTableRepairsForeignChanges runs the controller, with its
// table guard, in a node namespace and lets "someone else" change the
// ruleset: nft flush ruleset (20 times, for the figures), the table
// deleted, one group chain flushed, one set element deleted, and a flush
// immediately followed by an API change (a trusted incremental sync racing
// the repair). After each, the table must equal a fresh render of the same
// state within a second, a denied pod's probes (sent all along) must never
// be answered beyond that window, and the allowed and anti-spoofing checks
// must hold. It prints the window's p50/p99 (make bench-policy-repair).
func TestKernelPolicyTableRepairsForeignChanges(t *testing.T) {
	w := singleNodeWorld(t)
	w.addNamespace("x", map[string]string{"ns": "x"})
	w.addNamespace("y", map[string]string{"ns": "y"})
	w.addPod("x", "a", "n1", "10.244.1.10", false, map[string]string{"pod": "a"})
	w.addPod("x", "b", "n1", "10.244.1.11", false, map[string]string{"pod": "b"})
	w.addPod("y", "c", "n1", "10.244.1.12", false, map[string]string{"pod": "c"})
	w.addPolicy(np("x", "a-from-b", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("pod", "b")}}}}}))
	k := newKernelNode(t)
	ifaces := &staticIfaces{m: map[netip.Addr]string{}}
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		ip := netip.MustParseAddr(p.Status.PodIP)
		k.addPod(p.Namespace+"/"+p.Name, ifaceFor(p), ip)
		ifaces.m[ip] = ifaceFor(p)
	}
	k.serve("x/a", 80)
	k.serve("y/c", 80) // open: no policy in y
	xa, xb, yc := netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.1.11"), netip.MustParseAddr("10.244.1.12")
	spoof := netip.MustParseAddr("10.244.1.99")
	k.addAddr("x/b", spoof)

	// The reference: the same state rendered fresh in a namespace of its own.
	desired := policy.Compile(w.snapshot("n1"))
	want := render(t, desired)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewSimpleClientset()
	for i := range w.cluster.Namespaces {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &w.cluster.Namespaces[i], metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		if _, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range w.cluster.Policies {
		p := &w.cluster.Policies[i]
		if _, err := client.NetworkingV1().NetworkPolicies(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := policy.New(policy.Config{
		NodeName: "n1", Informers: factoryInformers(factory), NFT: mustNFT(t, k.node), Interfaces: ifaces,
		Watch: openWatch(t, k.node),
		// The periodic read-back is the only other repair; keep it out of
		// the way (the default is a minute).
		Sync: syncrunner.Options{MinInterval: 100 * time.Millisecond, MaxInterval: time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	factory.WaitForCacheSync(ctx.Done())
	defer netnstest.RunGuarded(ctx, t, k.node, c.Run, c.Watch)() // nft runs in the node namespace
	defer cancel()
	if _, ok := waitTable(t, k.node, want, 5*time.Second); !ok {
		t.Fatalf("first sync: table never matched a fresh render:\n%s\nwant:\n%s", listTable(t, k.node), want)
	}

	// A denied pod (y/c) probes x/a all along; record every answer.
	var mu sync.Mutex
	var answered []time.Time
	probeCtx, stopProbes := context.WithCancel(ctx)
	probesDone := make(chan struct{})
	go func() {
		defer close(probesDone)
		for probeCtx.Err() == nil {
			start := time.Now()
			if k.connect("y/c", netip.Addr{}, xa, 80) {
				mu.Lock()
				answered = append(answered, start)
				mu.Unlock()
			}
		}
	}()

	group := ""
	for name, g := range desired.Groups {
		if g.Direction == "ingress" {
			group = name
		}
	}
	var changes []foreignChange
	for i := 0; i < 20; i++ {
		changes = append(changes, foreignChange{what: "flush ruleset", nft: "flush ruleset"})
	}
	changes = append(changes,
		foreignChange{what: "delete table", nft: "delete table inet " + policy.TableName},
		foreignChange{what: "flush group chain", nft: "flush chain inet " + policy.TableName + " " + group},
		foreignChange{what: "delete one pod-ifaces element", nft: fmt.Sprintf(`delete element inet %s %s { "%s" . %s }`,
			policy.TableName, policy.SetPodIfaces, ifaces.m[xa], xa)},
		foreignChange{what: "delete one group set element", nft: fmt.Sprintf("delete element inet %s %s-all { %s }",
			policy.TableName, group, xb)},
		foreignChange{what: "flush ruleset, then an API change", nft: "flush ruleset", thenTouch: true},
	)
	type window struct{ from, to time.Time }
	var windows []window
	var flushTimes []time.Duration
	for i, ch := range changes {
		from := time.Now()
		if err := k.node.Do(func(ns.NetNS) error {
			cmd := exec.Command("nft", "-f", "-")
			cmd.Stdin = strings.NewReader(ch.nft + "\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("nft %q: %v: %s", ch.nft, err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		done := time.Now()
		if ch.thenTouch {
			p, err := client.CoreV1().Pods("y").Get(ctx, "c", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p.Annotations = map[string]string{"touched": fmt.Sprint(i)}
			if _, err := client.CoreV1().Pods("y").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		at, ok := waitTable(t, k.node, want, 3*time.Second)
		if !ok {
			t.Fatalf("%s (#%d): table not repaired within 3s:\n%s\nwant:\n%s", ch.what, i, listTable(t, k.node), want)
		}
		windows = append(windows, window{from, at})
		took := at.Sub(done)
		if ch.what == "flush ruleset" {
			flushTimes = append(flushTimes, took)
		}
		t.Logf("%-36s repaired (table equal to a fresh render) %v after the foreign change", ch.what, took.Round(100*time.Microsecond))
		if took > time.Second {
			t.Errorf("%s: window %v, want under 1s", ch.what, took)
		}
		if k.connect("y/c", netip.Addr{}, xa, 80) {
			t.Errorf("%s: denied y/c -> x/a answered after the repair", ch.what)
		}
		if !k.connect("x/b", netip.Addr{}, xa, 80) {
			t.Errorf("%s: allowed x/b -> x/a refused after the repair", ch.what)
		}
		if !k.connect("x/b", netip.Addr{}, yc, 80) {
			t.Errorf("%s: x/b -> y/c (no policy) refused after the repair", ch.what)
		}
		if k.udpArrives("x/b", spoof, k.pods["y/c"], yc) {
			t.Errorf("%s: x/b -> y/c from a spoofed source arrived after the repair", ch.what)
		}
		time.Sleep(150 * time.Millisecond) // let probes run against the repaired table
	}
	stopProbes()
	<-probesDone
	mu.Lock()
	defer mu.Unlock()
	for _, a := range answered {
		inWindow := false
		for _, win := range windows {
			if !a.Before(win.from.Add(-400*time.Millisecond)) && !a.After(win.to) {
				inWindow = true
			}
		}
		if !inWindow {
			t.Errorf("denied probe started at %s answered outside every repair window", a.Format("15:04:05.000"))
		}
	}
	sort.Slice(flushTimes, func(i, j int) bool { return flushTimes[i] < flushTimes[j] })
	p := func(q float64) time.Duration { return flushTimes[int(q*float64(len(flushTimes)-1)+0.5)] }
	t.Logf("nft flush ruleset -> table complete and enforcing, %d flushes: p50 %v, p99 %v, max %v (denied probes answered in windows: %d)",
		len(flushTimes), p(0.5).Round(100*time.Microsecond), p(0.99).Round(100*time.Microsecond),
		flushTimes[len(flushTimes)-1].Round(100*time.Microsecond), len(answered))
}

// mustNFT opens the policy table's nftables interface (knftables checks nft
// in the calling namespace).
func mustNFT(t *testing.T, n ns.NetNS) knftables.Interface {
	t.Helper()
	var nft knftables.Interface
	if err := n.Do(func(ns.NetNS) error {
		var err error
		nft, err = knftables.New(knftables.InetFamily, policy.TableName)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return nft
}

// listTable is the table as nft lists it, normalised: counter values and
// handles dropped, set elements sorted.
func listTable(t *testing.T, n ns.NetNS) string {
	t.Helper()
	var out []byte
	if err := n.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command("nft", "list", "table", "inet", policy.TableName).CombinedOutput()
		if err != nil {
			out = []byte("(no table: " + strings.TrimSpace(string(out)) + ")")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return normalise(string(out))
}

var (
	counterValues = regexp.MustCompile(`packets \d+ bytes \d+`)
	elementLists  = regexp.MustCompile(`(?s)elements = \{(.*?)\}`)
	spaces        = regexp.MustCompile(`\s+`)
)

func normalise(s string) string {
	s = counterValues.ReplaceAllString(s, "packets _ bytes _")
	return elementLists.ReplaceAllStringFunc(s, func(m string) string {
		inner := elementLists.FindStringSubmatch(m)[1]
		var elems []string
		for _, e := range strings.Split(inner, ",") {
			if e = strings.TrimSpace(spaces.ReplaceAllString(e, " ")); e != "" {
				elems = append(elems, e)
			}
		}
		sort.Strings(elems)
		return "elements = { " + strings.Join(elems, ", ") + " }"
	})
}

// render programs d into a fresh namespace and lists it back.
func render(t *testing.T, d *policy.Desired) string {
	t.Helper()
	n := newNS(t)
	if err := n.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, policy.TableName)
		if err != nil {
			return err
		}
		_, err = policy.ApplyWith(context.Background(), nft, d, policy.ApplyOptions{Rewrite: true})
		return err
	}); err != nil {
		t.Fatalf("render: %v", err)
	}
	return listTable(t, n)
}

// waitTable polls until the node's table lists as want; it returns when.
func waitTable(t *testing.T, n ns.NetNS, want string, timeout time.Duration) (time.Time, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if listTable(t, n) == want {
			return time.Now(), true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Time{}, false
}
