//go:build e2e

package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/trellisnet/trellis/internal/ctl"
)

// statusUntil runs `trellisctl status` until it exits with want (agents
// may still be finishing their first syncs after an earlier test), for at
// most within, and returns the last run.
func statusUntil(t *testing.T, want int, within time.Duration, args ...string) result {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := trellisctl(t, 30*time.Second, append([]string{"status"}, args...)...)
		if r.Code == want || time.Now().After(deadline) {
			return r
		}
		time.Sleep(time.Second)
	}
}

// TestE2ECtlStatusHealthy: on the healthy lab every node is listed healthy
// with its routing mode, MTU and peers, the exit code is 0 and -o json
// parses into the same report.
func TestE2ECtlStatusHealthy(t *testing.T) {
	if !l.AgentPod() {
		t.Fatalf("trellisctl reaches agents in their DaemonSet pods; this lab installs Trellis as %q", l.State.Install)
	}
	start := time.Now()
	r := statusUntil(t, 0, 30*time.Second)
	t.Logf("trellisctl status took %v (last run)", time.Since(start))
	if r.Code != 0 {
		t.Fatalf("status on the healthy lab: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	nodes := l.Nodes()
	if !strings.Contains(r.Stdout, "nodes: ") || !strings.Contains(r.Stdout, " healthy, 0 unhealthy") {
		t.Errorf("no summary line saying every node is healthy")
	}
	r = trellisctl(t, 30*time.Second, "status", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("status -o json: exit %d", r.Code)
	}
	var rep ctl.StatusReport
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("status -o json does not parse: %v", err)
	}
	if len(rep.Nodes) != len(nodes) || rep.Summary.Healthy != len(nodes) {
		t.Fatalf("report has %d nodes (%d healthy), the lab %d", len(rep.Nodes), rep.Summary.Healthy, len(nodes))
	}
	for _, n := range rep.Nodes {
		st := n.Agent
		switch {
		case !n.Healthy || st == nil:
			t.Errorf("%s: healthy %v, agent %v, unhealthy %v", n.Node, n.Healthy, st != nil, n.Unhealthy)
		case st.RoutingMode == "" || st.MTU < 576 || st.Version == "" || !st.Ready || !st.Dataplane.Ready:
			t.Errorf("%s: mode %q, MTU %d, version %q, ready %v, dataplane %+v", n.Node, st.RoutingMode, st.MTU, st.Version, st.Ready, st.Dataplane)
		case len(st.Routing.Peers) != len(nodes)-1 || st.Routing.Routes < len(nodes)-1:
			t.Errorf("%s: %d peers and %d routes, want %d peers each with a route", n.Node, len(st.Routing.Peers), st.Routing.Routes, len(nodes)-1)
		case len(st.Controllers) < 2:
			t.Errorf("%s: controllers %+v", n.Node, st.Controllers)
		}
		if st == nil {
			continue
		}
		for _, p := range st.Routing.Peers {
			want := "vxlan"
			if st.RoutingMode == "native" || (st.RoutingMode == "auto" && l.SameSubnet(n.Node, p.Node)) {
				want = "native"
			}
			if p.Mode != want || p.State != "programmed" {
				t.Errorf("%s → %s: mode %q state %q, want %s programmed (configured %s)", n.Node, p.Node, p.Mode, p.State, want, st.RoutingMode)
			}
		}
	}
}

// TestE2ECtlStatusAgentStopped stops the agent on one node (the DaemonSet,
// switched to OnDelete so no other pod rolls, gets a node affinity that
// excludes it: its pod goes away), expects exit 1 naming that node, then
// restores the DaemonSet and waits for every node healthy again.
func TestE2ECtlStatusAgentStopped(t *testing.T) {
	if !l.AgentPod() {
		t.Fatalf("this test stops a DaemonSet pod; this lab installs Trellis as %q", l.State.Install)
	}
	nodes := l.Nodes()
	victim := nodes[len(nodes)-1]
	ctx := context.Background()
	dsClient := l.CS.AppsV1().DaemonSets("kube-system")
	ds, err := dsClient.Get(ctx, ctl.AgentDaemonSet, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	origStrategy, origAffinity := *ds.Spec.UpdateStrategy.DeepCopy(), ds.Spec.Template.Spec.Affinity.DeepCopy()
	update := func(what string, change func(*appsv1.DaemonSet)) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			ds, err := dsClient.Get(ctx, ctl.AgentDaemonSet, metav1.GetOptions{})
			if err != nil {
				return err
			}
			change(ds)
			_, err = dsClient.Update(ctx, ds, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		update("restore the agent's affinity", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Affinity = origAffinity })
		// The template is the original again: the new pod on victim gets
		// the old revision, and no other pod rolls.
		waitAgentPod(t, victim, true, 90*time.Second)
		update("restore the update strategy", func(ds *appsv1.DaemonSet) { ds.Spec.UpdateStrategy = origStrategy })
	}
	t.Cleanup(restore)

	update("stop rolling updates", func(ds *appsv1.DaemonSet) {
		ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}
	})
	update("exclude "+victim, func(ds *appsv1.DaemonSet) {
		ds.Spec.Template.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{victim}}},
			}}}}}
	})
	waitAgentPod(t, victim, false, 60*time.Second)

	r := trellisctl(t, 60*time.Second, "status")
	if r.Code != 1 {
		t.Fatalf("status with the agent on %s stopped: exit %d, want 1", victim, r.Code)
	}
	if !strings.Contains(r.Stderr, victim+" (no agent pod)") {
		t.Errorf("stderr %q does not name %s as having no agent pod", r.Stderr, victim)
	}
	if !strings.Contains(r.Stdout, victim+" unhealthy: no agent pod") {
		t.Errorf("output does not name %s unhealthy", victim)
	}
	for _, n := range nodes[:len(nodes)-1] {
		if strings.Contains(r.Stderr, n+" (") {
			t.Errorf("stderr names %s, whose agent runs", n)
		}
	}

	restore()
	if r := statusUntil(t, 0, 60*time.Second); r.Code != 0 {
		t.Fatalf("after restoring the agent on %s: exit %d", victim, r.Code)
	}
}

// waitAgentPod waits until node has a Ready agent pod (present) or none at
// all (!present).
func waitAgentPod(t *testing.T, node string, present bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		pods, err := l.CS.CoreV1().Pods("kube-system").List(context.Background(), metav1.ListOptions{
			LabelSelector: ctl.AgentSelector, FieldSelector: "spec.nodeName=" + node})
		if err == nil {
			ready := false
			for _, p := range pods.Items {
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
						ready = true
					}
				}
			}
			if (present && ready) || (!present && len(pods.Items) == 0) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent pod on %s present=%v not reached within %v (last error %v)", node, present, within, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
