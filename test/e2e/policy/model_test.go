//go:build e2e

package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/policy/oracle"
	"github.com/trellisnet/trellis/test/e2e/framework"
	"github.com/trellisnet/trellis/test/e2e/netpolworld"
)

// probeSpec is one served port, probed over one IP family: fam is the
// family's name ("ipv4", "ipv6"), "" for the lab's primary family (the only
// one in a single-family lab).
type probeSpec struct {
	port  int
	proto corev1.Protocol
	fam   string
}

func (p probeSpec) String() string {
	s := fmt.Sprintf("%d/%s", p.port, strings.ToLower(string(p.proto)))
	if p.fam != "" {
		s += " over " + p.fam
	}
	return s
}

// served are the ports the pods serve (agnhost, TCP and UDP sockets) and
// the default probe set of a truth table.
var served = []probeSpec{{port: 80, proto: corev1.ProtocolTCP}, {port: 81, proto: corev1.ProtocolTCP},
	{port: 80, proto: corev1.ProtocolUDP}, {port: 81, proto: corev1.ProtocolUDP}}

// withSCTP adds SCTP 80 and 81, probed with the lab's raw-packet probe (a
// crafted INIT sent from the source pod, verdict = seen on the destination
// pod's interface): this kernel has no SCTP sockets, so nothing serves SCTP
// and none is needed. Opt-in per case to keep the suite's runtime small.
var withSCTP = append(append([]probeSpec{}, served...), probeSpec{port: 80, proto: corev1.ProtocolSCTP},
	probeSpec{port: 81, proto: corev1.ProtocolSCTP})

// model is the x/y/z × a/b/c world: short names ("x/a") map to the real
// generated namespaces.
type model struct {
	ns    map[string]string // "x" -> "x-7h2k9"
	pods  []string          // short names, sorted
	ref   map[string]string // "x/a" -> "x-7h2k9/a"
	netns map[string]string // "x/a" -> netns path of the pod
	ip    map[string]string // "x/a" -> pod IP (the primary family's)
	// fams are the lab's IP families, primary first; addr[f.Name()] maps
	// "x/a" to the pod's address of family f.
	fams []topology.ClusterFamily
	addr map[string]map[string]string
	// probes is the probe set of expect: served, or withSCTP for the
	// cases that set it (reset to served after each case).
	probes []probeSpec
}

// newModel creates namespaces x, y, z (label ns=<x|y|z>) and pods a, b, c
// in each, a/b/c pinned to the first three nodes.
func newModel(t *testing.T) *model {
	t.Helper()
	nodes := l.Nodes()
	if len(nodes) < 3 {
		t.Fatalf("the policy e2e model needs 3 nodes, lab has %v", nodes)
	}
	m := &model{probes: served, ns: map[string]string{}, ref: map[string]string{}, netns: map[string]string{}, ip: map[string]string{},
		fams: l.Families(), addr: map[string]map[string]string{}}
	ctx := context.Background()
	for _, n := range []string{"x", "y", "z"} {
		m.ns[n] = l.Namespace(t, "netpol-"+n, map[string]string{"ns": n})
		for i, p := range []string{"a", "b", "c"} {
			if _, err := l.CS.CoreV1().Pods(m.ns[n]).Create(ctx, netpolworld.ServerPod(m.ns[n], p, nodes[i]), metav1.CreateOptions{}); err != nil {
				t.Fatalf("create pod %s/%s: %v", m.ns[n], p, err)
			}
			short := n + "/" + p
			m.pods = append(m.pods, short)
			m.ref[short] = m.ns[n] + "/" + p
		}
	}
	for _, n := range []string{"x", "y", "z"} {
		if err := l.WaitPodsReady(ctx, m.ns[n], 3, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(m.pods)
	for _, short := range m.pods {
		p := m.get(t, short)
		path, err := probe.PodNetns(p)
		if err != nil {
			t.Fatal(err)
		}
		m.netns[short], m.ip[short] = path, p.Status.PodIP
		for _, f := range m.fams {
			a, ok := framework.FamilyAddr(p, f)
			if !ok {
				t.Fatalf("pod %s has no %s address (podIPs %v)", short, f.Name(), p.Status.PodIPs)
			}
			if m.addr[f.Name()] == nil {
				m.addr[f.Name()] = map[string]string{}
			}
			m.addr[f.Name()][short] = a.String()
		}
	}
	return m
}

// family resolves a probe's family name ("" is the primary family).
func (m *model) family(name string) topology.ClusterFamily {
	for _, f := range m.fams {
		if f.Name() == name {
			return f
		}
	}
	return m.fams[0]
}

// addrOf is pod short's address in the family named fam ("" primary).
func (m *model) addrOf(fam, short string) string {
	return m.addr[m.family(fam).Name()][short]
}

// tables are the truth tables expect probes: every probe of m.probes over
// every family of the lab (family "" in a single-family lab).
func (m *model) tables() []probeSpec {
	if len(m.fams) == 1 {
		return m.probes
	}
	var out []probeSpec
	for _, f := range m.fams {
		for _, pr := range m.probes {
			out = append(out, probeSpec{pr.port, pr.proto, f.Name()})
		}
	}
	return out
}

// blocks returns one ipBlock peer per family of the lab, block(f) each.
func (m *model) blocks(block func(f topology.ClusterFamily) *networkingv1.IPBlock) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for _, f := range m.fams {
		out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: block(f)})
	}
	return out
}

// hostPrefix is pod short's address of family f as a host prefix (/32, /128).
func (m *model) hostPrefix(f topology.ClusterFamily, short string) string {
	a := netip.MustParseAddr(m.addr[f.Name()][short])
	return netip.PrefixFrom(a, a.BitLen()).String()
}

// nodePodCIDR is the pod CIDR of family f of the node pod short runs on.
func (m *model) nodePodCIDR(t *testing.T, short string, f topology.ClusterFamily) string {
	t.Helper()
	node, err := l.CS.CoreV1().Nodes().Get(context.Background(), m.get(t, short).Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range node.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is6() == f.IPv6 {
			return p.String()
		}
	}
	t.Fatalf("node %s has no %s pod CIDR (%v)", node.Name, f.Name(), node.Spec.PodCIDRs)
	return ""
}

// allAddresses is 0.0.0.0/0 or ::/0.
func allAddresses(f topology.ClusterFamily) string {
	if f.IPv6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0).String()
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0).String()
}

func (m *model) get(t *testing.T, short string) *corev1.Pod {
	t.Helper()
	ns, name, _ := strings.Cut(m.ref[short], "/")
	p, err := l.CS.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cluster reads the live API objects of the model into the oracle's input.
func (m *model) cluster(t *testing.T) (*oracle.Cluster, map[string]*corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	c := &oracle.Cluster{}
	byShort := map[string]*corev1.Pod{}
	nsList, err := l.CS.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Namespaces = nsList.Items
	for short, full := range m.ns {
		pods, err := l.CS.CoreV1().Pods(full).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.Pods = append(c.Pods, pods.Items...)
		nps, err := l.CS.NetworkingV1().NetworkPolicies(full).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.Policies = append(c.Policies, nps.Items...)
		_ = short
	}
	for i := range c.Pods {
		p := &c.Pods[i]
		for short, full := range m.ref {
			if full == p.Namespace+"/"+p.Name {
				byShort[short] = p
			}
		}
	}
	return c, byShort
}

// familyView is c with every pod's PodIP (and PodIPs) its address of family
// f, the address a connection over f comes from and goes to: what the
// oracle matches ipBlocks against. byShort is re-pointed into the view.
func familyView(c *oracle.Cluster, byShort map[string]*corev1.Pod, f topology.ClusterFamily) (*oracle.Cluster, map[string]*corev1.Pod) {
	v := *c
	v.Pods = make([]corev1.Pod, len(c.Pods))
	index := map[*corev1.Pod]int{}
	for i := range c.Pods {
		index[&c.Pods[i]] = i
		p := c.Pods[i].DeepCopy()
		p.Status.PodIP, p.Status.PodIPs = "", nil
		if a, ok := framework.FamilyAddr(&c.Pods[i], f); ok {
			p.Status.PodIP, p.Status.PodIPs = a.String(), []corev1.PodIP{{IP: a.String()}}
		}
		v.Pods[i] = *p
	}
	out := map[string]*corev1.Pod{}
	for short, p := range byShort {
		out[short] = &v.Pods[index[p]]
	}
	return &v, out
}

// expected computes the truth table of every probe (m.tables) from the
// oracle, over each probe's family. A pod reaching itself never leaves its
// namespace: always allowed.
func (m *model) expected(t *testing.T) map[probeSpec]*connectivity.Matrix {
	t.Helper()
	all, allPods := m.cluster(t)
	out := map[probeSpec]*connectivity.Matrix{}
	for _, pr := range m.tables() {
		c, pods := familyView(all, allPods, m.family(pr.fam))
		mx := connectivity.NewMatrix(m.pods, true)
		for _, a := range m.pods {
			for _, b := range m.pods {
				if a != b {
					mx.Set(a, b, c.Allowed(pods[a], pods[b], pr.proto, int32(pr.port)))
				}
			}
		}
		out[pr] = mx
	}
	return out
}

// probeCells probes the given (from, to, probe) cells in parallel. TCP and
// UDP probes cannot tell "no answer" from a broken probe; an SCTP probe
// that could not run (socket or namespace error) is an error, never a deny.
func (m *model) probeCells(cells []cell) (map[cell]bool, error) {
	res := map[cell]bool{}
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 48)
	for _, c := range cells {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ok, err := m.probe(c, 1500*time.Millisecond)
			mu.Lock()
			res[c] = ok
			if err != nil {
				errs = append(errs, fmt.Errorf("%s -> %s %s: %w", c.from, c.to, c.pr, err))
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res, errors.Join(errs...)
}

func (m *model) probe(c cell, timeout time.Duration) (bool, error) {
	to := m.addrOf(c.pr.fam, c.to)
	if c.pr.proto == corev1.ProtocolSCTP {
		dst, err := netip.ParseAddr(to)
		if err != nil {
			return false, err
		}
		return probe.ProbeSCTP(m.netns[c.from], m.netns[c.to], dst, uint16(c.pr.port), timeout)
	}
	err := probe.ProbeFromNetns(m.netns[c.from], probe.Target{Addr: to, Port: c.pr.port,
		Proto: strings.ToLower(string(c.pr.proto))}, timeout)
	return err == nil, nil
}

type cell struct {
	from, to string
	pr       probeSpec
}

// expect probes the whole truth table (every pod pair, m.probes) and
// fails t with expected vs observed tables for every probe that differs.
// Cells that differ are re-probed for up to `within` after the first full
// round (policy programming and informer latency), so a pass means the
// kernel converged. The window starts after that round, not before it: a
// round of a dual-stack world is 8–12 probes per pod pair, and the denied
// ones each wait their timeout, so the round alone can outlast `within`
// and leave no time to re-probe a cell probed before the change landed.
func (m *model) expect(t *testing.T, within time.Duration) {
	t.Helper()
	exp := m.expected(t)
	var all []cell
	for _, pr := range m.tables() {
		for _, a := range m.pods {
			for _, b := range m.pods {
				if a != b {
					all = append(all, cell{a, b, pr})
				}
			}
		}
	}
	start := time.Now()
	obs, err := m.probeCells(all)
	if err != nil {
		t.Fatalf("probes failed: %v", err)
	}
	probed := time.Now()
	for {
		var wrong []cell
		for _, c := range all {
			if obs[c] != exp[c.pr].Cells[c.from][c.to] {
				wrong = append(wrong, c)
			}
		}
		if len(wrong) == 0 {
			allowed := 0
			for _, c := range all {
				if obs[c] {
					allowed++
				}
			}
			t.Logf("truth tables as expected (%d probes, %d allowed; converged in %s)", len(all), allowed, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(probed) > within {
			var b strings.Builder
			for _, pr := range m.tables() {
				o := connectivity.NewMatrix(m.pods, true)
				for _, c := range all {
					if c.pr == pr {
						o.Set(c.from, c.to, obs[c])
					}
				}
				if exp[pr].Diff(o) > 0 {
					fmt.Fprintf(&b, "--- %s (rows: from, columns: to)\n%s", pr, connectivity.Report(exp[pr], o))
				}
			}
			c, _ := m.cluster(t)
			for _, np := range c.Policies {
				fmt.Fprintf(&b, "policy %s/%s: %s\n", np.Namespace, np.Name, np.Spec.String())
			}
			t.Fatalf("connectivity differs from the oracle %s after the first round of probes (%s in all):\n%s", within,
				time.Since(start).Round(time.Millisecond), b.String())
		}
		time.Sleep(300 * time.Millisecond)
		again, err := m.probeCells(wrong)
		if err != nil {
			t.Fatalf("probes failed: %v", err)
		}
		for c, v := range again {
			obs[c] = v
		}
	}
}

// Policy helpers. Namespaces are given by short name and resolved.

func (m *model) create(t *testing.T, short string, name string, spec networkingv1.NetworkPolicySpec) {
	t.Helper()
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: m.ns[short]}, Spec: spec}
	if _, err := l.CS.NetworkingV1().NetworkPolicies(m.ns[short]).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy %s/%s: %v", short, name, err)
	}
}

func (m *model) update(t *testing.T, short string, name string, spec networkingv1.NetworkPolicySpec) {
	t.Helper()
	ctx := context.Background()
	np, err := l.CS.NetworkingV1().NetworkPolicies(m.ns[short]).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np.Spec = spec
	if _, err := l.CS.NetworkingV1().NetworkPolicies(m.ns[short]).Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update policy %s/%s: %v", short, name, err)
	}
}

func (m *model) remove(t *testing.T, short string, name string) {
	t.Helper()
	if err := l.CS.NetworkingV1().NetworkPolicies(m.ns[short]).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete policy %s/%s: %v", short, name, err)
	}
}

// removeAll deletes every policy of the model's namespaces.
func (m *model) removeAll(t *testing.T) {
	t.Helper()
	for _, full := range m.ns {
		if err := l.CS.NetworkingV1().NetworkPolicies(full).DeleteCollection(context.Background(),
			metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatalf("delete policies in %s: %v", full, err)
		}
	}
}

// labelPod / labelNamespace merge labels (value "" removes the key).
func (m *model) labelPod(t *testing.T, short string, kv map[string]string) {
	t.Helper()
	p := m.get(t, short)
	setLabels(&p.ObjectMeta, kv)
	if _, err := l.CS.CoreV1().Pods(p.Namespace).Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("label pod %s: %v", short, err)
	}
}

func (m *model) labelNamespace(t *testing.T, short string, kv map[string]string) {
	t.Helper()
	ctx := context.Background()
	ns, err := l.CS.CoreV1().Namespaces().Get(ctx, m.ns[short], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setLabels(&ns.ObjectMeta, kv)
	if _, err := l.CS.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", short, err)
	}
}

func setLabels(om *metav1.ObjectMeta, kv map[string]string) {
	if om.Labels == nil {
		om.Labels = map[string]string{}
	}
	for k, v := range kv {
		if v == "" {
			delete(om.Labels, k)
		} else {
			om.Labels[k] = v
		}
	}
}
