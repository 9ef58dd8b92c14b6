//go:build e2e

package install

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/kube"
)

// The agent runs in the shipped least-privilege profile (not privileged,
// only added capabilities), and with NET_ADMIN removed the new agent pod
// stays NotReady and says in its log which capability is missing; the
// rollout then stops at that one node and a rollback restores it.
func TestE2EInstallLeastPrivilege(t *testing.T) {
	requireDaemonSet(t)
	ctx := context.Background()
	ds := agentDaemonSet(t)
	c := ds.Spec.Template.Spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatalf("the agent container has no securityContext capabilities: %+v", sc)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Fatalf("the agent container runs privileged")
	}
	if !slices.Contains(sc.Capabilities.Add, corev1.Capability("NET_ADMIN")) {
		t.Fatalf("the agent adds %v, expected NET_ADMIN among them", sc.Capabilities.Add)
	}
	t.Logf("shipped profile: privileged=false, drop %v, add %v", sc.Capabilities.Drop, sc.Capabilities.Add)
	for _, n := range l.Nodes() {
		p, err := install.AgentPod(ctx, l.CS, n)
		if err != nil || !kube.PodReady(p) {
			t.Fatalf("the agent on %s is not Ready in the shipped profile: %v", n, err)
		}
	}

	var reduced []corev1.Capability
	for _, cp := range sc.Capabilities.Add {
		if cp != "NET_ADMIN" {
			reduced = append(reduced, cp)
		}
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []any{map[string]any{"name": c.Name, "securityContext": map[string]any{"capabilities": map[string]any{"add": reduced}}}}}}}})
	if _, err := l.CS.AppsV1().DaemonSets(install.Namespace).Patch(ctx, ds.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		labCmd(t, "rollback")
		for _, n := range l.Nodes() {
			if p, err := install.AgentPod(ctx, l.CS, n); err != nil || !kube.PodReady(p) {
				t.Errorf("after the rollback the agent on %s is not Ready: %v", n, err)
			}
		}
	})
	// The first replaced node's new pod must stay NotReady and log why.
	var bad *corev1.Pod
	deadline := time.Now().Add(90 * time.Second)
	for bad == nil {
		if time.Now().After(deadline) {
			t.Fatal("no agent pod without NET_ADMIN appeared within 90s")
		}
		pods, err := l.CS.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: install.AgentSelector})
		if err != nil {
			t.Fatal(err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			caps := p.Spec.Containers[0].SecurityContext.Capabilities
			if p.DeletionTimestamp == nil && !slices.Contains(caps.Add, "NET_ADMIN") && len(p.Status.ContainerStatuses) > 0 &&
				(p.Status.ContainerStatuses[0].State.Running != nil || p.Status.ContainerStatuses[0].RestartCount > 0) {
				bad = p
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	node := bad.Spec.NodeName
	logs := ""
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		p, err := install.AgentPod(ctx, l.CS, node)
		if err != nil {
			t.Fatal(err)
		}
		if kube.PodReady(p) {
			t.Fatalf("the agent on %s without NET_ADMIN became Ready", node)
		}
		logs = l.AgentLogs(t, node, 200)
		if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount > 0 && !strings.Contains(logs, "NET_ADMIN") {
			logs += "\n" + previousLogs(t, node)
		}
	}
	line := ""
	for _, ln := range strings.Split(logs, "\n") {
		if strings.Contains(ln, "NET_ADMIN") {
			line = ln
			break
		}
	}
	if line == "" {
		t.Fatalf("the agent on %s without NET_ADMIN stayed NotReady but its log does not name the capability:\n%s", node, logs)
	}
	t.Logf("without NET_ADMIN the agent on %s stays NotReady for 30s and logs: %s", node, strings.TrimSpace(line))
	ds = agentDaemonSet(t)
	if ds.Status.UpdatedNumberScheduled > 1 {
		t.Errorf("the rollout went past the broken node: %d nodes updated", ds.Status.UpdatedNumberScheduled)
	}
}

func previousLogs(t *testing.T, node string) string {
	t.Helper()
	var b strings.Builder
	if err := install.AgentLogs(context.Background(), l.CS, node, 200, true, &b); err != nil {
		return ""
	}
	return b.String()
}
