package conntest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func fake(name string, o Outcome) Scenario {
	return Scenario{Name: name, Family: strings.Split(name, "/")[0],
		Run: func(context.Context, *Env) Outcome { return o }}
}

func TestScenarioNamesAreUniqueAndFamilied(t *testing.T) {
	seen := map[string]bool{}
	families := map[string]bool{}
	for _, s := range Scenarios() {
		if seen[s.Name] {
			t.Errorf("scenario %s twice", s.Name)
		}
		seen[s.Name] = true
		if !strings.HasPrefix(s.Name, s.Family+"/") {
			t.Errorf("scenario %s is not named after its family %s", s.Name, s.Family)
		}
		families[s.Family] = true
	}
	for _, f := range []string{FamilyPodToPod, FamilyService, FamilyNode, FamilyExternal, FamilyDNS, FamilyMTU, FamilyPolicy} {
		if !families[f] {
			t.Errorf("no scenario of family %s", f)
		}
	}
	for _, p := range []string{"default-deny-ingress", "default-deny-egress", "allow-pod-label", "allow-namespace",
		"allow-ipblock-except", "allow-port", "allow-named-port"} {
		if !seen["policy/"+p] {
			t.Errorf("no scenario policy/%s", p)
		}
	}
}

func TestPolicyCasesHaveANegativeControl(t *testing.T) {
	for _, c := range policyCases() {
		if c.blocked.from == "" || c.blocked.to == "" {
			t.Errorf("%s: no negative control", c.name)
		}
		for _, a := range c.allowed {
			if a == c.blocked {
				t.Errorf("%s: the negative control is also an allowed connection", c.name)
			}
		}
	}
}

func TestSelectFiltersByRegexInOrder(t *testing.T) {
	all := []Scenario{fake("pod-to-pod/a", Passf("")), fake("policy/b", Passf("")), fake("pod-to-pod/c", Passf(""))}
	got := Select(all, regexp.MustCompile("^pod-to-pod/"))
	if len(got) != 2 || got[0].Name != "pod-to-pod/a" || got[1].Name != "pod-to-pod/c" {
		t.Fatalf("Select = %v", names(got))
	}
	if len(Select(all, nil)) != 3 {
		t.Fatalf("Select(nil) dropped scenarios")
	}
	if len(Select(all, regexp.MustCompile("nothing"))) != 0 {
		t.Fatalf("Select kept a scenario that does not match")
	}
}

func names(s []Scenario) []string {
	var out []string
	for _, x := range s {
		out = append(out, x.Name)
	}
	return out
}

func TestRunAllKeepsOrderRunsConcurrentlyAndSummarizes(t *testing.T) {
	var running, peak atomic.Int32
	slow := func(o Outcome) func(context.Context, *Env) Outcome {
		return func(context.Context, *Env) Outcome {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
			running.Add(-1)
			return o
		}
	}
	sc := []Scenario{
		{Name: "a/1", Family: "a", Run: slow(Passf("ok"))},
		{Name: "a/2", Family: "a", Run: slow(Failf("broken"))},
		{Name: "b/3", Family: "b", Run: slow(Skipf("no target"))},
		{Name: "b/4", Family: "b", Run: slow(Passf("ok"))},
	}
	var seen []string
	res := RunAll(context.Background(), &Env{}, sc, 2, func(r Result) { seen = append(seen, r.Name) })
	if len(seen) != 4 {
		t.Fatalf("onDone saw %d results", len(seen))
	}
	for i, r := range res {
		if r.Name != sc[i].Name {
			t.Errorf("result %d is %s, want %s", i, r.Name, sc[i].Name)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d, want 2 (the limit)", p)
	}
	s := Summarize(res)
	if s != (Summary{Passed: 2, Failed: 1, Skipped: 1}) || s.OK() {
		t.Errorf("summary %+v, OK=%v", s, s.OK())
	}
	if got := s.String(); got != "2 passed, 1 failed, 1 skipped" {
		t.Errorf("summary line %q", got)
	}
	if !strings.HasPrefix(res[1].Line(), "FAIL  a/2") || !strings.Contains(res[1].Line(), "broken") {
		t.Errorf("line %q", res[1].Line())
	}
}

func TestRunAllCancelledFailsWhatDidNotRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := RunAll(ctx, &Env{}, []Scenario{fake("a/1", Passf("ok")), fake("a/2", Skipf("x"))}, 1, nil)
	for _, r := range res {
		if r.Verdict != Fail || !strings.Contains(r.Reason, "not run") {
			t.Errorf("%s after cancel: %s %s", r.Name, r.Verdict, r.Reason)
		}
	}
}

func TestSummaryAllPassOrSkipIsOK(t *testing.T) {
	s := Summarize([]Result{{Verdict: Pass}, {Verdict: Skip}})
	if !s.OK() {
		t.Fatalf("a run without failures is not OK")
	}
}

func TestCrossNodeSkipsOnOneNode(t *testing.T) {
	s := crossNode(fake("mtu/x", Failf("ran")))
	if o := s.Run(context.Background(), &Env{Nodes: []string{"n1"}}); o.Verdict != Skip || !strings.Contains(o.Reason, "two schedulable nodes") {
		t.Errorf("one node: %+v", o)
	}
	if o := s.Run(context.Background(), &Env{Nodes: []string{"n1", "n2"}}); o.Verdict != Fail {
		t.Errorf("two nodes: the scenario did not run: %+v", o)
	}
}

func TestExternalAndDNSSkipWithReason(t *testing.T) {
	for _, s := range Scenarios() {
		if s.Name != "external/tcp" && s.Name != "dns/service-name" {
			continue
		}
		o := s.Run(context.Background(), &Env{})
		if o.Verdict != Skip || o.Reason == "" {
			t.Errorf("%s without target/DNS: %+v", s.Name, o)
		}
	}
}

func TestSchedulableNodes(t *testing.T) {
	node := func(name string, ready bool, mod func(*corev1.Node)) corev1.Node {
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		n := corev1.Node{}
		n.Name = name
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0." + name[1:]}}
		if mod != nil {
			mod(&n)
		}
		return n
	}
	names, ips, why := SchedulableNodes([]corev1.Node{
		node("n3", true, nil),
		node("n1", true, nil),
		node("n2", false, nil),
		node("n4", true, func(n *corev1.Node) { n.Spec.Unschedulable = true }),
		node("n5", true, func(n *corev1.Node) {
			n.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}
		}),
		node("n6", true, func(n *corev1.Node) { n.Status.Addresses = nil }),
	})
	if strings.Join(names, ",") != "n1,n3" || ips["n1"] != "10.0.0.1" {
		t.Errorf("schedulable %v %v", names, ips)
	}
	joined := strings.Join(why, "; ")
	for _, w := range []string{"n2: not Ready", "n4: cordoned", "n5: tainted k:NoSchedule", "n6: no InternalIP"} {
		if !strings.Contains(joined, w) {
			t.Errorf("why %q lacks %q", joined, w)
		}
	}
}

func TestParsePolicyPackets(t *testing.T) {
	in := `# HELP trellis_policy_packets_total New connections
# TYPE trellis_policy_packets_total counter
trellis_policy_packets_total{direction="ingress",namespace="ns1",policy="p",verdict="allow"} 3
trellis_policy_packets_total{direction="ingress",namespace="ns1",policy="p",verdict="deny"} 7
trellis_policy_packets_total_other{direction="ingress",namespace="ns1",policy="p",verdict="deny"} 100
trellis_sync_total 4
`
	got, err := ParsePolicyPackets(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if v := got[[4]string{"ns1", "p", "ingress", "deny"}]; v != 7 {
		t.Errorf("deny = %v, want 7", v)
	}
	if v := got[[4]string{"ns1", "p", "ingress", "allow"}]; v != 3 {
		t.Errorf("allow = %v, want 3", v)
	}
	if _, err := ParsePolicyPackets(strings.NewReader(`trellis_policy_packets_total{policy="p"} x`)); err == nil {
		t.Errorf("a malformed value was accepted")
	}
}

func TestAgentCountersShareOneReadPerNode(t *testing.T) {
	var reads atomic.Int32
	deny := 2
	a := &AgentCounters{MaxAge: time.Hour, Get: func(_ context.Context, node, path string, w io.Writer) error {
		reads.Add(1)
		if path != "/v1/metrics" {
			t.Errorf("path %s", path)
		}
		if node == "bad" {
			return errors.New("exec refused")
		}
		fmt.Fprintf(w, "trellis_policy_packets_total{direction=\"egress\",namespace=\"ns\",policy=\"p\",verdict=\"deny\"} %d\n", deny)
		return nil
	}}
	for i := 0; i < 3; i++ {
		v, err := a.Denied(context.Background(), "n1", "ns", "p", "egress")
		if err != nil || v != 2 {
			t.Fatalf("Denied = %v, %v", v, err)
		}
	}
	if v, _ := a.Denied(context.Background(), "n1", "ns", "p", "ingress"); v != 0 {
		t.Errorf("ingress deny = %v, want 0 (only egress counted)", v)
	}
	if reads.Load() != 1 {
		t.Errorf("%d reads of one node within MaxAge, want 1", reads.Load())
	}
	if _, err := a.Denied(context.Background(), "bad", "ns", "p", "egress"); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Errorf("an unreadable agent: %v, want an error naming its node", err)
	}
	a.MaxAge = 0
	deny = 5
	time.Sleep(time.Millisecond)
	if v, _ := a.Denied(context.Background(), "n1", "ns", "p", "egress"); v != 5 {
		t.Errorf("after MaxAge: %v, want a fresh read (5)", v)
	}
}

// countingConfirmer answers deny counts from a list, then its last.
type countingConfirmer struct{ counts []float64 }

func (c *countingConfirmer) Denied(context.Context, string, string, string, string) (float64, error) {
	v := c.counts[0]
	if len(c.counts) > 1 {
		c.counts = c.counts[1:]
	}
	return v, nil
}

func TestConfirmDropNeedsTheDenyCounterToGrow(t *testing.T) {
	e := &Env{NS: "ns", ConfirmTimeout: 200 * time.Millisecond}
	e.Confirm = &countingConfirmer{counts: []float64{3, 3, 5}}
	if o := e.confirmDrop(context.Background(), "blocked", "n1", "p", "ingress", 3); o.Verdict != Pass || !strings.Contains(o.Reason, "denied 2 connection(s) on n1") {
		t.Errorf("counter grew: %+v", o)
	}
	e.Confirm = &countingConfirmer{counts: []float64{3}}
	if o := e.confirmDrop(context.Background(), "blocked", "n1", "p", "ingress", 3); o.Verdict != Fail || !strings.Contains(o.Reason, "not a policy drop") {
		t.Errorf("counter did not grow: %+v", o)
	}
}
