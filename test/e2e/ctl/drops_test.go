//go:build e2e

package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// dropLine is one line of `trellisctl drops -o json` and when it was read.
type dropLine struct {
	d  agentapi.Drop
	at time.Time
}

// TestE2ECtlDropsShowsDeniedProbe: with `trellisctl drops --follow -n NS`
// running, a probe from pod a to pod b (another node), denied by a policy
// isolating b for ingress, appears as a line naming a, b, port 80, TCP,
// ingress and the policy within 2 s of the probe's start. When trellisctl
// goes away, the reader it exec'd in the agent pod exits too.
func TestE2ECtlDropsShowsDeniedProbe(t *testing.T) {
	if !l.AgentPod() {
		t.Fatalf("trellisctl reaches agents in their DaemonSet pods; this lab installs Trellis as %q", l.State.Install)
	}
	nodes := l.Nodes()
	if len(nodes) < 2 {
		t.Fatalf("need two nodes, the lab has %v", nodes)
	}
	ctx := context.Background()
	ns := l.Namespace(t, "drops", nil)
	l.CreatePods(t, ns, []framework.PodSpec{{Name: "a", Node: nodes[0]}, {Name: "b", Node: nodes[1]}}, 2*time.Minute)
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "b-no-ingress", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := l.CS.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	from, to := ns+"/a", ns+"/b"
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := l.Prober.Probe(ctx, from, to, 80, "tcp")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s -> %s:80 still allowed 30 s after the policy", from, to)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// trellisctl drops --follow, its lines read as they come.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	bin := filepath.Join(filepath.Dir(l.Bin), "trellisctl")
	cmd := exec.CommandContext(runCtx, bin, "--kubeconfig", l.Paths.AdminKubeconfig(), "drops", "--follow", "-n", ns, "-o", "json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	lines := make(chan dropLine, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var d agentapi.Drop
			if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
				t.Errorf("not a JSON drop: %q: %v", sc.Text(), err)
				continue
			}
			lines <- dropLine{d, time.Now()}
		}
	}()
	go func() { _ = cmd.Wait(); close(exited) }()

	isProbe := func(d agentapi.Drop) bool {
		return d.Src.Pod == from && d.Dst.Pod == to && d.Dst.Port == 80 && d.Protocol == "TCP"
	}
	waitLine := func(within time.Duration, match func(agentapi.Drop) bool) (dropLine, bool) {
		timer := time.NewTimer(within)
		defer timer.Stop()
		for {
			select {
			case dl, ok := <-lines:
				if !ok {
					t.Fatalf("trellisctl drops ended: %s", stderr.String())
				}
				if match(dl.d) {
					return dl, true
				}
			case <-timer.C:
				return dropLine{}, false
			}
		}
	}
	// Warm up: denied probes until one shows, so that b's node's stream is
	// up (exec through the API server) before the measured probe.
	warmUntil := time.Now().Add(60 * time.Second)
	for warm := false; !warm; {
		if time.Now().After(warmUntil) {
			t.Fatalf("no line for denied probes %s -> %s within 60 s; stderr: %s", from, to, stderr.String())
		}
		go func() { _, _ = l.Prober.Probe(ctx, from, to, 80, "tcp") }()
		_, warm = waitLine(3*time.Second, isProbe)
	}
	for drained := false; !drained; { // the rest of the kept lines
		_, ok := waitLine(500*time.Millisecond, func(agentapi.Drop) bool { return true })
		drained = !ok
	}

	start := time.Now()
	go func() { _, _ = l.Prober.Probe(ctx, from, to, 80, "tcp") }()
	dl, ok := waitLine(5*time.Second, func(d agentapi.Drop) bool { return isProbe(d) && !d.Time.Before(start.Add(-time.Second)) })
	if !ok {
		t.Fatalf("the denied probe's line did not appear within 5 s; stderr: %s", stderr.String())
	}
	latency := dl.at.Sub(start)
	d := dl.d
	if d.Node != nodes[1] || d.Direction != "ingress" || d.Verdict != "policy" || d.Pod != to ||
		len(d.Policies) != 1 || d.Policies[0] != ns+"/b-no-ingress" || !strings.HasPrefix(d.Group, "ing-") {
		t.Errorf("line for the probe: %+v; want node %s, ingress, policy verdict on %s by %s/b-no-ingress", d, nodes[1], to, ns)
	}
	t.Logf("probe start -> line: %v (%s %s -> %s:%d/%s %s on %s by %v)", latency, d.Node, d.Src.Pod, d.Dst.Pod, d.Dst.Port, d.Protocol, d.Direction, d.Pod, d.Policies)
	if latency > 2*time.Second {
		t.Fatalf("the denied probe's line came %v after the probe, want <= 2 s", latency)
	}

	// trellisctl goes away: the exec'd readers in the agent pods follow.
	_ = cmd.Process.Kill()
	<-exited
	marker := "namespace=" + ns
	deadline = time.Now().Add(10 * time.Second)
	for {
		left := readersFor(marker)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after trellisctl was killed, its agent-side readers still run: pids %v", left)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// readersFor lists the processes whose command line holds
// `ctl get --until-stdin-closed` and marker (lab nodes share the host's
// process table).
func readersFor(marker string) []string {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cl, "--until-stdin-closed") && strings.Contains(cl, marker) {
			out = append(out, filepath.Base(filepath.Dir(p)))
		}
	}
	return out
}
