//go:build e2e

package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
	"github.com/trellisnet/trellis/test/e2e/perpacket"
)

// Scale of TestBenchPolicy (make bench-policy).
const (
	benchPolicies = 1000
)

// benchPods is the number of API-only pod addresses (TRELLIS_BENCH_POLICY_PODS,
// default 10,000).
var benchPods = func() int {
	if n, err := strconv.Atoi(os.Getenv("TRELLIS_BENCH_POLICY_PODS")); err == nil && n > 0 {
		return n
	}
	return 10000
}()

// TestBenchPolicy (make bench-policy, not part of make test): programming
// latency, per-packet cost and agent memory with benchPolicies policies and
// benchPods pod addresses. Most pods are API objects bound to a Node object
// that exists only in the API (no kubelet), with an address in their status;
// the client and server pods are real.
func TestBenchPolicy(t *testing.T) {
	requireAgent(t)
	ctx := context.Background()
	nodes := l.Nodes()
	real := l.Namespace(t, "bench-real", map[string]string{"bench": "real"})
	refs := l.CreatePods(t, real, []framework.PodSpec{{Name: "client", Node: nodes[0], Labels: map[string]string{"role": "client"}},
		{Name: "server", Node: nodes[1], Labels: map[string]string{"role": "server"}}}, 2*time.Minute)
	client, serverRef := netnsOf(t, refs[0]), refs[1]
	server := netnsOf(t, serverRef)
	serverIP := podIP(t, serverRef)
	stopSink := sink(t, server)
	defer stopSink()

	rss0 := agentRSS(t)

	start := time.Now()
	fake := createScale(t)
	// The real pods are isolated both ways by policies whose peers include
	// thousands of addresses, so their packets walk the large sets.
	serverIn := networkingv1.NetworkPolicySpec{PodSelector: *labels("role", "server"), PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{PodSelector: labels("role", "client")},
			{NamespaceSelector: labels("bench", "fake"), PodSelector: labels("role", "a")}}}}}
	clientOut := networkingv1.NetworkPolicySpec{PodSelector: *labels("role", "client"), PolicyTypes: egressOnly,
		Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
			{PodSelector: labels("role", "server")},
			{NamespaceSelector: labels("bench", "fake"), PodSelector: labels("role", "b")}}}}}
	benchCreate(t, real, "server-in", serverIn)
	benchCreate(t, real, "client-out", clientOut)
	t.Logf("%d pods and %d policies created in %s", benchPods, benchPolicies, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	for _, n := range nodes {
		waitSetSize(t, n, "pod-addrs", benchPods, 3*time.Minute)
	}
	t.Logf("every node's table holds the %d addresses %s after the last policy was created", benchPods, time.Since(start).Round(time.Millisecond))
	rss1 := agentRSS(t)

	// Per-packet cost, everything programmed: perpacket's own client and
	// server isolated by policies whose peers are thousands of these
	// addresses ÷ the same pods selected by no policy, interleaved.
	perPacket(t, fake)

	// Programming latency: the server's allow rule for the client is
	// deleted and re-created; each flip is timed from the API call to the
	// first probe that observes it.
	var deny, allow []time.Duration
	allowSpec := networkingv1.NetworkPolicySpec{PodSelector: *labels("role", "server"), PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: labels("role", "client")}}}}}
	benchCreate(t, real, "server-deny", networkingv1.NetworkPolicySpec{PodSelector: *labels("role", "server"), PolicyTypes: ingressOnly})
	if err := l.CS.NetworkingV1().NetworkPolicies(real).Delete(ctx, "server-in", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	benchCreate(t, real, "toggle", allowSpec)
	waitFlip(t, client, serverIP, true, 30*time.Second)
	for i := 0; i < 20; i++ {
		at := time.Now()
		if err := l.CS.NetworkingV1().NetworkPolicies(real).Delete(ctx, "toggle", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deny = append(deny, waitFlipSince(t, at, client, serverIP, false))
		at = time.Now()
		benchCreate(t, real, "toggle", allowSpec)
		allow = append(allow, waitFlipSince(t, at, client, serverIP, true))
	}
	t.Logf("programming latency (API call -> observed by probes, %d flips each): deny p50 %s p99 %s; allow p50 %s p99 %s",
		len(deny), pct(deny, 50), pct(deny, 99), pct(allow, 50), pct(allow, 99))

	// A peer set change driven by a pod, not a policy: the client's label
	// takes it out of the allow policy's peers and back.
	var out, in []time.Duration
	relabel := func(role string) {
		patch := []byte(`{"metadata":{"labels":{"role":"` + role + `"}}}`)
		if _, err := l.CS.CoreV1().Pods(real).Patch(ctx, "client", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ {
		at := time.Now()
		relabel("client-off")
		out = append(out, waitFlipSince(t, at, client, serverIP, false))
		at = time.Now()
		relabel("client")
		in = append(in, waitFlipSince(t, at, client, serverIP, true))
	}
	t.Logf("peer set change (client pod relabelled out of / into the allow policy's peers -> observed by probes, %d each): out p50 %s p99 %s; in p50 %s p99 %s",
		len(out), pct(out, 50), pct(out, 99), pct(in, 50), pct(in, 99))
	for n := range rss1 {
		t.Logf("agent %s RSS %d KiB -> %d KiB: %.2f KiB per pod", n, rss0[n], rss1[n], float64(rss1[n]-rss0[n])/float64(benchPods))
	}
}

// createScale creates the bench's scale: a ghost node (API only), benchPods
// pods on it with addresses, and benchPolicies-2 policies among them, in a
// namespace labelled bench=fake whose name it returns.
func createScale(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	fake := l.Namespace(t, "bench-fake", map[string]string{"bench": "fake"})
	// The scale: a ghost node, benchPods pods on it, benchPolicies policies.
	ghost := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-ghost"}}
	if _, err := l.CS.CoreV1().Nodes().Create(ctx, ghost, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.CS.CoreV1().Nodes().Delete(context.Background(), "bench-ghost", metav1.DeleteOptions{}) })
	start := time.Now()
	parallel(t, benchPods, 32, func(i int) error {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%05d", i), Namespace: fake,
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%benchPolicies), "role": []string{"a", "b", "c"}[i%3]}},
			Spec: corev1.PodSpec{NodeName: "bench-ghost", Containers: []corev1.Container{{Name: "c", Image: images.AgnhostImage,
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}}}
		got, err := l.CS.CoreV1().Pods(fake).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		n := 10<<24 | 245<<16 + i + 1 // 10.245.0.1 on
		ip := fmt.Sprintf("%d.%d.%d.%d", n>>24, n>>16&255, n>>8&255, n&255)
		got.Status.PodIP, got.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		_, err = l.CS.CoreV1().Pods(fake).UpdateStatus(ctx, got, metav1.UpdateOptions{})
		return err
	})
	t.Logf("%d API-only pods with addresses created in %s", benchPods, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	parallel(t, benchPolicies-2, 16, func(i int) error {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("np%04d", i), Namespace: fake},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *labels("app", fmt.Sprintf("app%d", i)),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: labels("app", fmt.Sprintf("app%d", (i+1)%benchPolicies))}},
					Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("http"), nil)}}}}}
		_, err := l.CS.NetworkingV1().NetworkPolicies(fake).Create(ctx, np, metav1.CreateOptions{})
		return err
	})
	t.Logf("%d policies created in %s", benchPolicies-2, time.Since(start).Round(time.Millisecond))
	return fake
}

// perPacket measures the per-packet cost (package perpacket) between pods
// isolated by policies whose peers hold the fake namespace's pods of role a
// (ingress) and b (egress), BENCH_PERPACKET_ROUNDS rounds (default 20).
// BENCH_PERPACKET_OLD_PROBE=N first runs N rounds with the probe whose
// client closes first, after a 25 s trace of it, to show the artefact it
// made. The real measurement starts with a 10 s trace.
// BENCH_PERPACKET_OUT=f.json saves the result.
func perPacket(t *testing.T, fake string) perpacket.Result {
	t.Helper()
	o := perpacket.Options{Rounds: envInt(t, "BENCH_PERPACKET_ROUNDS", 20), Trace: 10 * time.Second,
		IngressPeers: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("bench", "fake"), PodSelector: labels("role", "a")}},
		EgressPeers:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("bench", "fake"), PodSelector: labels("role", "b")}}}
	if n := envInt(t, "BENCH_PERPACKET_OLD_PROBE", 0); n > 0 {
		old := o
		old.Rounds, old.CloseClientFirst, old.Trace = n, true, 25*time.Second
		t.Logf("the probe whose client closes first (the artefact, not a figure):")
		t.Logf("old probe: %s", perpacket.Measure(t, l, old))
	}
	r := perpacket.Measure(t, l, o)
	if out := os.Getenv("BENCH_PERPACKET_OUT"); out != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err == nil {
			err = os.WriteFile(out, b, 0o644)
		}
		if err != nil {
			t.Errorf("write %s: %v", out, err)
		}
	}
	return r
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// TestBenchPerPacket (make bench-per-packet, not part of make test): the
// per-packet cost alone at benchPolicies policies and benchPods addresses.
func TestBenchPerPacket(t *testing.T) {
	requireAgent(t)
	start := time.Now()
	fake := createScale(t)
	for _, n := range l.Nodes() {
		waitSetSize(t, n, "pod-addrs", benchPods, 3*time.Minute)
	}
	t.Logf("%d pods and %d policies in every node's table %s after the first create", benchPods, benchPolicies-2, time.Since(start).Round(time.Millisecond))
	perPacket(t, fake)
}

func netnsOf(t *testing.T, ref string) string {
	t.Helper()
	nsName, name, _ := strings.Cut(ref, "/")
	p, err := l.CS.CoreV1().Pods(nsName).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path, err := probe.PodNetns(p)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func podIP(t *testing.T, ref string) string {
	t.Helper()
	nsName, name, _ := strings.Cut(ref, "/")
	p, err := l.CS.CoreV1().Pods(nsName).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Status.PodIP
}

func benchCreate(t *testing.T, nsName, name string, spec networkingv1.NetworkPolicySpec) {
	t.Helper()
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nsName}, Spec: spec}
	if _, err := l.CS.NetworkingV1().NetworkPolicies(nsName).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// parallel runs f(0..n-1) on workers goroutines and fails t with the
// first error.
func parallel(t *testing.T, n, workers int, f func(i int) error) {
	t.Helper()
	var g errgroup.Group
	g.SetLimit(workers)
	for i := 0; i < n; i++ {
		g.Go(func() error { return f(i) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// sink serves, inside the server pod's netns, a discard server on 5201 and
// an accept-and-close server on 5202.
func sink(t *testing.T, netnsPath string) func() {
	t.Helper()
	var ls []net.Listener
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		for _, p := range []string{"5201", "5202"} {
			ln, err := net.Listen("tcp4", ":"+p)
			if err != nil {
				return err
			}
			ls = append(ls, ln)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(ln net.Listener, h func(net.Conn)) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go h(c)
		}
	}
	go serve(ls[0], func(c net.Conn) { defer c.Close(); _, _ = io.Copy(io.Discard, c) })
	go serve(ls[1], func(c net.Conn) { c.Close() })
	return func() {
		for _, ln := range ls {
			ln.Close()
		}
	}
}

// waitFlip probes client -> server:5202 every few ms until its outcome is
// want and returns how long that took.
// waitFlip probes client -> server until the verdict is want and returns
// when the first probe that saw it started (the moment its SYN left, which
// the table already judged the new way): a connection is proof of
// "allowed"; "denied" needs two probes in a row that time out (a timeout
// under load is not proof alone). Allowed-probes wait 20 ms, so an allow
// is seen within about 25 ms of the table flipping; denied-probes 50 ms.
func waitFlip(t *testing.T, client, serverIP string, want bool, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := 50 * time.Millisecond
	if want {
		timeout = 20 * time.Millisecond
	}
	var firstDenied time.Duration
	for time.Since(start) < within {
		at := time.Since(start)
		c, err := topology.DialInNetns(client, "tcp4", net.JoinHostPort(serverIP, "5202"), timeout)
		if err == nil {
			c.Close()
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("probe: %v", err)
		}
		switch {
		case err == nil && want:
			return at
		case err != nil && !want && firstDenied > 0:
			return firstDenied
		case err != nil && !want:
			firstDenied = at
			continue
		}
		firstDenied = 0
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("client -> server did not become %v within %s", want, within)
	return 0
}

// waitFlipSince is waitFlip's observation measured from at (the API call).
func waitFlipSince(t *testing.T, at time.Time, client, serverIP string, want bool) time.Duration {
	t.Helper()
	probing := time.Now()
	return probing.Sub(at) + waitFlip(t, client, serverIP, want, 10*time.Second)
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i].Round(time.Millisecond)
}

// waitSetSize waits until a set of node's policy table holds at least n
// elements.
func waitSetSize(t *testing.T, node, set string, n int, within time.Duration) {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		out, err := exec.Command("ip", "netns", "exec", h.Netns, "nft", "list", "set", "inet", "trellis-policy", set).Output()
		if err == nil && strings.Count(string(out), ",")+1 >= n {
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%s: set %s did not reach %d elements within %s", node, set, n, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// agentRSS reads the resident memory (KiB) of each node's trellis-agent.
func agentRSS(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, node := range l.Nodes() {
		pid := l.AgentPID(t, node)
		if pid == 0 {
			continue
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
				out[node] = kb
			}
		}
	}
	return out
}
