//go:build e2e

// Package perpacket measures, on a lab, what NetworkPolicy costs per
// packet: TCP throughput and connection rate from a client pod to a server
// pod on another node, with both pods isolated by policies whose peer sets
// hold the cluster's addresses ("isolated"), divided by the same between
// pods selected by no policy ("open"; the policy table with every other
// policy and address stays in place).
//
// Two identical pairs of pods run side by side (clients on the first node,
// servers on the second): pair a isolated and pair b open for the first
// half of the rounds, then the other way round, so neither a pod's own
// speed nor a policy change falls into a comparison. Within a round the
// two arms take turns in slices of 250 ms (isolated, open, open, isolated,
// …; open first in the next round), so that the machine's drift and the
// bursts of other work on its 2 shared cores hit both alike; each round
// gives one ratio per figure.
//
// The connection rate is dpbench's probe whose server closes first: the
// client never holds a port in TIME_WAIT, so the rate does not depend on
// how many connections the namespace made in the last minute (see
// dpbench.ConnRateLoop and docs/scale.md, "Per-packet cost").
//
// make bench-policy and make bench-per-packet call Measure at 1,000
// policies / 10,000 addresses; the scale bench calls it at its largest step.
package perpacket

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/internal/scalebench"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// Targets of the per-packet ratios (isolated ÷ open, medians).
const (
	ThroughputTarget = 0.97
	ConnRateTarget   = 0.95
)

// Options of Measure. The zero value is the default run.
type Options struct {
	// Rounds (default 20); each measures both arms once.
	Rounds int
	// Time each arm spends on throughput and on connections in a round
	// (defaults 1 s and 2 s), in slices of 250 ms alternating between the
	// arms.
	Throughput, ConnRate time.Duration
	// IngressPeers are added to the server's ingress rule and EgressPeers
	// to the client's egress rule, so that the isolated pods' packets are
	// matched against sets holding these peers' addresses (for instance
	// every API-only pod of the bench).
	IngressPeers, EgressPeers []networkingv1.NetworkPolicyPeer
	// CloseClientFirst measures the connection rate with the probe whose
	// client closes first, the one that held client ports in TIME_WAIT and
	// made the rate swing: kept to show that artefact, never for figures.
	CloseClientFirst bool
	// Trace, when set, first runs one connection-rate loop that long on
	// the first pair (isolated) and logs its per-second counts and counters.
	Trace time.Duration
	// Logf receives a line per measurement (default t.Logf).
	Logf func(format string, args ...any)
}

// Result of Measure.
type Result struct {
	Isolated, Open []Arm
	// Per-round ratios isolated ÷ open.
	Throughput, ConnRate dpbench.Stats
	// Load average (1 min) before and after.
	LoadBefore, LoadAfter string
}

// Verdicts say whether the medians meet the targets.
func (r Result) Verdicts() (throughput, connRate bool) {
	return r.Throughput.Median >= ThroughputTarget, r.ConnRate.Median >= ConnRateTarget
}

func (r Result) String() string {
	tv, cv := r.Verdicts()
	return fmt.Sprintf("per-packet cost, isolated ÷ open, median (min–max) of %d interleaved rounds: throughput %.3f (%.3f–%.3f, target ≥ %.2f %s), connection rate %.3f (%.3f–%.3f, target ≥ %.2f %s); load average %s → %s",
		len(r.Throughput.Samples), r.Throughput.Median, r.Throughput.Min, r.Throughput.Max, ThroughputTarget, verdict(tv),
		r.ConnRate.Median, r.ConnRate.Min, r.ConnRate.Max, ConnRateTarget, verdict(cv), r.LoadBefore, r.LoadAfter)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// Fill records the result in a scale bench step.
func (r Result) Fill(s *scalebench.Step) {
	s.ThroughputRatio = &scalebench.Spread{Median: r.Throughput.Median, Min: r.Throughput.Min, Max: r.Throughput.Max}
	s.ConnRateRatio = &scalebench.Spread{Median: r.ConnRate.Median, Min: r.ConnRate.Min, Max: r.ConnRate.Max}
	s.PerPacketRounds = len(r.Throughput.Samples)
}

// Measure runs the interleaved rounds on lab l: a namespace of its own with
// two client pods on the first node and two server pods on the second,
// servers inside the server pods' network namespaces, and the policies of
// the isolated pair (the isolation is swapped once, halfway, and waited for
// in both nodes' tables). Any failed connection fails t.
func Measure(t testing.TB, l *framework.Lab, o Options) Result {
	t.Helper()
	if o.Rounds <= 0 {
		o.Rounds = 20
	}
	if o.Throughput <= 0 {
		o.Throughput = time.Second
	}
	if o.ConnRate <= 0 {
		o.ConnRate = 2 * time.Second
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	nodes := l.Nodes()
	if len(nodes) < 2 {
		t.Fatalf("per-packet cost needs two nodes, the lab has %d", len(nodes))
	}
	pairs := setup(t, l, nodes[0], nodes[1], o)
	res := Result{LoadBefore: loadAverage()}
	for r := 0; r < o.Rounds; r++ {
		iso, open := pairs[0], pairs[1]
		if r >= o.Rounds/2 {
			iso, open = open, iso
		}
		if r == 0 || r == o.Rounds/2 {
			open.isolate(t, false)
			iso.isolate(t, true)
		}
		if r == 0 && o.Trace > 0 {
			r := iso.trace(t, o)
			o.Logf("trace, %s of connections (pair %s, isolated, client closes first %v): %s", o.Trace, iso.name, o.CloseClientFirst, r)
		}
		var a, b Arm
		if r%2 == 0 {
			a, b = round(t, iso, open, o)
		} else {
			b, a = round(t, open, iso, o)
		}
		a.Isolated = true
		o.Logf("round %d isolated (pair %s): %s", r+1, iso.name, a)
		o.Logf("round %d open     (pair %s): %s", r+1, open.name, b)
		o.Logf("round %d nodes: client node %s; server node %s", r+1,
			a.ClientNode.Show(dpbench.NodeCounters...), a.ServerNode.Show(dpbench.NodeCounters...))
		res.Isolated, res.Open = append(res.Isolated, a), append(res.Open, b)
	}
	var tput, conn []float64
	for i := range res.Isolated {
		tput = append(tput, res.Isolated[i].Mbps/res.Open[i].Mbps)
		conn = append(conn, res.Isolated[i].ConnPerSec/res.Open[i].ConnPerSec)
	}
	res.Throughput, res.ConnRate = dpbench.Summarise(tput), dpbench.Summarise(conn)
	res.LoadAfter = loadAverage()
	o.Logf("%s", res)
	return res
}

// pair is one client and one server pod and how to isolate them.
type pair struct {
	name                       string
	l                          *framework.Lab
	ns                         string
	client, server             dpbench.Netns
	clientNode, serverNode     dpbench.Netns
	clientNodeNS, serverNodeNS string // netns names, for ip netns exec
	clientIf, serverIf         string // host-side interfaces
	serverIP                   string
	policies                   map[string]networkingv1.NetworkPolicySpec
}

func setup(t testing.TB, l *framework.Lab, clientNode, serverNode string, o Options) [2]*pair {
	t.Helper()
	nsName := l.Namespace(t, "perpacket", map[string]string{"perpacket": "real"})
	var specs []framework.PodSpec
	for _, name := range []string{"a", "b"} {
		specs = append(specs,
			framework.PodSpec{Name: "client-" + name, Node: clientNode, Labels: map[string]string{"perpacket-pair": name, "perpacket": "client"}},
			framework.PodSpec{Name: "server-" + name, Node: serverNode, Labels: map[string]string{"perpacket-pair": name, "perpacket": "server"}})
	}
	refs := l.CreatePods(t, nsName, specs, 2*time.Minute)
	var pairs [2]*pair
	for i, name := range []string{"a", "b"} {
		pairs[i] = newPair(t, l, nsName, name, refs[2*i], refs[2*i+1], clientNode, serverNode, o)
	}
	return pairs
}

func newPair(t testing.TB, l *framework.Lab, nsName, name, clientRef, serverRef, clientNode, serverNode string, o Options) *pair {
	t.Helper()
	p := &pair{name: name, l: l, ns: nsName, client: dpbench.Netns(l.PodNetns(t, clientRef)), server: dpbench.Netns(l.PodNetns(t, serverRef))}
	p.serverIP = l.Pod(t, serverRef).Status.PodIP
	clientIP := l.Pod(t, clientRef).Status.PodIP
	for _, x := range []struct {
		node   string
		ip     string
		netns  *dpbench.Netns
		name   *string
		hostIf *string
	}{{clientNode, clientIP, &p.clientNode, &p.clientNodeNS, &p.clientIf}, {serverNode, p.serverIP, &p.serverNode, &p.serverNodeNS, &p.serverIf}} {
		h, err := l.State.Topology.Node(x.node)
		if err != nil {
			t.Fatal(err)
		}
		*x.name, *x.netns = h.Netns, dpbench.Netns("/run/netns/"+h.Netns)
		*x.hostIf = hostInterface(t, h.Netns, x.ip)
	}
	serve(t, p.server)

	sel := func(role string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"perpacket-pair": name, "perpacket": role}}
	}
	p.policies = map[string]networkingv1.NetworkPolicySpec{
		"perpacket-" + name + "-server-in": {PodSelector: *sel("server"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: append([]networkingv1.NetworkPolicyPeer{{PodSelector: sel("client")}}, o.IngressPeers...)}}},
		"perpacket-" + name + "-client-out": {PodSelector: *sel("client"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: append([]networkingv1.NetworkPolicyPeer{{PodSelector: sel("server")}}, o.EgressPeers...)}}},
	}
	return p
}

// serve starts, inside the server pod's network namespace, a discard
// server on 5201 (throughput) and dpbench's close-first server on 5202
// (connection rate); they stop when t ends.
func serve(t testing.TB, server dpbench.Netns) {
	t.Helper()
	var tput, conn net.Listener
	framework.InNetns(t, string(server), func() error {
		var err error
		if tput, err = net.Listen("tcp4", ":5201"); err != nil {
			return err
		}
		conn, err = net.Listen("tcp4", ":5202")
		return err
	})
	t.Cleanup(func() { _ = tput.Close(); _ = conn.Close() })
	go func() { _ = dpbench.ServeCloseFirst(conn) }()
	go func() {
		for {
			c, err := tput.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 256<<10)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// isolate creates (true) or deletes (false, when they exist) the pair's
// two policies and waits until the server's node has the server's
// interface in ingress-pods and the client's node the client's in
// egress-pods (or neither), then lets the agents' syncs settle for a second.
func (b *pair) isolate(t testing.TB, on bool) {
	t.Helper()
	ctx := context.Background()
	api := b.l.CS.NetworkingV1().NetworkPolicies(b.ns)
	for name, spec := range b.policies {
		var err error
		if on {
			_, err = api.Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: b.ns}, Spec: spec}, metav1.CreateOptions{})
		} else {
			err = api.Delete(ctx, name, metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				err = nil
			}
		}
		if err != nil {
			t.Fatalf("isolate %v: %s: %v", on, name, err)
		}
	}
	waitMap(t, b.serverNodeNS, "ingress-pods", b.serverIf, on)
	waitMap(t, b.clientNodeNS, "egress-pods", b.clientIf, on)
	time.Sleep(time.Second)
}

// trace runs one connection-rate loop of o.Trace and returns it with the
// pods' and nodes' counters over it.
func (b *pair) trace(t testing.TB, o Options) string {
	t.Helper()
	c0, s0 := b.podCounters(t)
	cn0, sn0 := b.nodeCounters(t)
	r, err := dpbench.ConnRateLoop(b.client, net.JoinHostPort(b.serverIP, "5202"),
		dpbench.ConnRateOptions{Duration: o.Trace, CloseClientFirst: o.CloseClientFirst})
	if err != nil {
		t.Fatalf("pair %s: connection-rate trace: %v", b.name, err)
	}
	c1, s1 := b.podCounters(t)
	cn1, sn1 := b.nodeCounters(t)
	dc, ds, dcn, dsn := c1.Sub(c0), s1.Sub(s0), cn1.Sub(cn0), sn1.Sub(sn0)
	dc["TCP:tw"], ds["TCP:tw"], dcn["conntrack:count"], dsn["conntrack:count"] = c1["TCP:tw"], s1["TCP:tw"], cn1["conntrack:count"], sn1["conntrack:count"]
	return fmt.Sprintf("%s; client %s; server %s; client node %s; server node %s", r, dc.Show(dpbench.ClientCounters...),
		ds.Show(dpbench.ServerCounters...), dcn.Show(dpbench.NodeCounters...), dsn.Show(dpbench.NodeCounters...))
}

// hostInterface is the node's interface toward a local pod address (the
// plugin's /32 host route).
func hostInterface(t testing.TB, nodeNS, ip string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", nodeNS, "ip", "-o", "route", "get", ip).Output()
	if err != nil {
		t.Fatalf("route to %s in %s: %v", ip, nodeNS, err)
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	t.Fatalf("route to %s in %s names no device: %s", ip, nodeNS, out)
	return ""
}

// waitMap waits until the policy table's map (ingress-pods, egress-pods)
// in nodeNS holds iface (present) or not.
func waitMap(t testing.TB, nodeNS, set, iface string, present bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "exec", nodeNS, "nft", "list", "map", "inet", "trellis-policy", set).Output()
		if err == nil && strings.Contains(string(out), iface) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: map %s still %s %s after 30 s (%v)", nodeNS, set, map[bool]string{true: "lacks", false: "holds"}[present], iface, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func loadAverage() string {
	out, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
