//go:build e2e

package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/ctl"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/test/e2e/netpolworld"
)

// explainWorld is the differential-test world (test/e2e/netpolworld):
// namespaces x, y, z (label ns=<x|y|z>), server pods a, b, c in each on
// the first three nodes.
type explainWorld struct {
	ns    map[string]string // "x" -> "expl-x-abcde"
	pods  []string          // "x/a", sorted
	ref   map[string]string // "x/a" -> "expl-x-abcde/a"
	netns map[string]string
	ip    map[string]string
}

func newExplainWorld(t *testing.T) *explainWorld {
	t.Helper()
	nodes := l.Nodes()
	if len(nodes) < 3 {
		t.Fatalf("the explain world needs 3 nodes, lab has %v", nodes)
	}
	w := &explainWorld{ns: map[string]string{}, ref: map[string]string{}, netns: map[string]string{}, ip: map[string]string{}}
	ctx := context.Background()
	for _, n := range []string{"x", "y", "z"} {
		w.ns[n] = l.Namespace(t, "expl-"+n, map[string]string{"ns": n})
		for i, p := range []string{"a", "b", "c"} {
			if _, err := l.CS.CoreV1().Pods(w.ns[n]).Create(ctx, netpolworld.ServerPod(w.ns[n], p, nodes[i]), metav1.CreateOptions{}); err != nil {
				t.Fatalf("create pod %s/%s: %v", w.ns[n], p, err)
			}
			w.pods = append(w.pods, n+"/"+p)
			w.ref[n+"/"+p] = w.ns[n] + "/" + p
		}
	}
	for _, n := range []string{"x", "y", "z"} {
		if err := l.WaitPodsReady(ctx, w.ns[n], 3, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(w.pods)
	for _, short := range w.pods {
		ns, name, _ := strings.Cut(w.ref[short], "/")
		p, err := l.CS.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if w.netns[short], err = probe.PodNetns(p); err != nil {
			t.Fatal(err)
		}
		w.ip[short] = p.Status.PodIP
	}
	return w
}

type explainCase struct {
	from, to string
	port     netpolworld.Port
}

func (c explainCase) String() string {
	return fmt.Sprintf("%s -> %s %d/%s", c.from, c.to, c.port.Port, c.port.Proto)
}

// explain runs `trellisctl explain -o json` (with --verify if asked) and
// checks that its exit code agrees with its verdict.
func (w *explainWorld) explain(t *testing.T, c explainCase, verify bool) ctl.ExplainResult {
	t.Helper()
	args := []string{"explain", w.ref[c.from], w.ref[c.to], fmt.Sprintf("%d/%s", c.port.Port, c.port.Proto), "-o", "json"}
	if verify {
		args = append(args, "--verify")
	}
	r := trellisctl(t, time.Minute, args...)
	var res ctl.ExplainResult
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("%s: exit %d, output is not an explanation: %v\n%s", c, r.Code, err, r.Stderr)
	}
	if want := map[bool]int{true: 0, false: 1}[res.Allowed]; r.Code != want && (r.Code != 1 || !verify) {
		t.Fatalf("%s: exit %d for allowed=%v (stderr %s)", c, r.Code, res.Allowed, r.Stderr)
	}
	return res
}

func (w *explainWorld) probe(c explainCase) bool {
	err := probe.ProbeFromNetns(w.netns[c.from], probe.Target{Addr: w.ip[c.to], Port: c.port.Port,
		Proto: strings.ToLower(string(c.port.Proto))}, 1500*time.Millisecond)
	return err == nil
}

// TestE2ECtlExplainMatchesProbes: in the differential-test world with
// random policies, `trellisctl explain` gives the verdict live probes
// observe on 50 random pod pairs (ports, protocols), exiting 0/1 by it,
// and `--verify` agrees with the agents' traces of the live rulesets.
func TestE2ECtlExplainMatchesProbes(t *testing.T) {
	if !l.AgentPod() {
		t.Fatalf("explain --verify reaches agents in their DaemonSet pods; this lab installs Trellis as %q", l.State.Install)
	}
	seed := time.Now().UnixNano() % 1_000_000
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewSource(seed))
	w := newExplainWorld(t)
	g := netpolworld.Gen{R: r, Pods: w.pods, IP: w.ip}
	// Enough policies that most pairs are decided by one, with a default
	// deny in one namespace so denials are common.
	ctx := context.Background()
	specs := []networkingv1.NetworkPolicySpec{{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	for i, n := 0, 3+r.Intn(3); i < n; i++ {
		specs = append(specs, g.Spec())
	}
	for i, s := range specs {
		ns := w.ns[g.Pick("x", "y", "z")]
		if i == 0 {
			ns = w.ns["z"]
		}
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("rnd-%d", i), Namespace: ns}, Spec: s}
		if _, err := l.CS.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create policy: %v", err)
		}
	}
	var cases []explainCase
	for len(cases) < 50 {
		a, b := w.pods[r.Intn(len(w.pods))], w.pods[r.Intn(len(w.pods))]
		if a != b {
			cases = append(cases, explainCase{a, b, netpolworld.Served[r.Intn(len(netpolworld.Served))]})
		}
	}

	start := time.Now()
	verdicts := map[explainCase]ctl.ExplainResult{}
	var lat []time.Duration
	for _, c := range cases {
		t0 := time.Now()
		verdicts[c] = w.explain(t, c, false)
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	allowed := 0
	for _, v := range verdicts {
		if v.Allowed {
			allowed++
		}
	}
	t.Logf("explain latency over %d runs (the trellisctl process included): p50 %s, max %s; %d allowed, %d denied",
		len(lat), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), allowed, len(cases)-allowed)

	// Probe until every case agrees (policy programming converges within
	// seconds), then fail with the remaining disagreements.
	pending := cases
	for deadline := time.Now().Add(20 * time.Second); ; {
		var mu sync.Mutex
		var wg sync.WaitGroup
		var next []explainCase
		for _, c := range pending {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if w.probe(c) != verdicts[c].Allowed {
					mu.Lock()
					next = append(next, c)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		pending = next
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	for _, c := range pending {
		v := verdicts[c]
		t.Errorf("%s: explain says allowed=%v (egress: %s; ingress: %s), the probe observed the opposite",
			c, v.Allowed, v.Egress.Reason, v.Ingress.Reason)
	}
	t.Logf("%d explained pairs matched their probes in %s", len(cases)-len(pending), time.Since(start).Round(time.Millisecond))

	// --verify on a sample: both verdicts, the agents' traces agree.
	sample := 0
	for _, c := range cases[:8] {
		res := w.explain(t, c, true)
		if len(res.Verify) == 0 {
			t.Errorf("%s --verify: no trace", c)
		}
		for _, v := range res.Verify {
			if !v.Agree {
				t.Errorf("%s --verify: node %s disagrees: %s", c, v.Node, v.Summary())
			}
		}
		sample++
	}
	t.Logf("--verify agreed on %d sampled pairs", sample)
}
