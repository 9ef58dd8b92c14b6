//go:build e2e

package install

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/nodesetup"
)

// agentClient is a client with the real ServiceAccount token of the agent
// pod on node, read from the pod's own filesystem.
func agentClient(t *testing.T, node string) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(agentConfig(t, node))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// agentConfig is the client configuration of agentClient.
func agentConfig(t *testing.T, node string) *rest.Config {
	t.Helper()
	pid, err := install.AgentPID(context.Background(), l.CS, node)
	if err != nil || pid == 0 {
		t.Fatalf("agent pod on %s: pid %d, %v", node, pid, err)
	}
	tok, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/var/run/secrets/kubernetes.io/serviceaccount/token", pid))
	if err != nil {
		t.Fatalf("the agent's token on %s: %v", node, err)
	}
	cfg := rest.AnonymousClientConfig(l.Config)
	cfg.BearerToken = strings.TrimSpace(string(tok))
	return cfg
}

func patchNode(cs kubernetes.Interface, node, patch string, sub ...string) error {
	_, err := cs.CoreV1().Nodes().Patch(context.Background(), node, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, sub...)
	return err
}

// The agent's ClusterRole lets it patch every Node; the shipped admission
// policy confines each agent, with its real pod-bound token, to its own
// Node and keeps it off the spec. The same patches by the admin succeed,
// so the refusals come from the policy, not from the patches.
func TestE2EInstallAgentWritesOnlyItsOwnNode(t *testing.T) {
	requireDaemonSet(t)
	nodes := l.Nodes()
	own, other := nodes[0], nodes[1]
	agent := agentClient(t, own)
	const key = "trellis.dev/e2e-write-probe"
	set := fmt.Sprintf(`{"metadata":{"annotations":{%q:"1"}}}`, key)
	unset := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, key)
	t.Cleanup(func() {
		for _, n := range nodes[:2] {
			_ = patchNode(l.CS, n, unset)
		}
		_ = patchNode(l.CS, own, `{"spec":{"unschedulable":null}}`)
	})

	if err := patchNode(agent, own, set); err != nil {
		t.Errorf("agent on %s patching its own Node: %v; want allowed", own, err)
	}
	if err := patchNode(agent, own, unset); err != nil {
		t.Errorf("agent on %s removing its annotation: %v; want allowed", own, err)
	}
	// The condition exactly as the agent sets it (strategic merge: by type).
	cond := fmt.Sprintf(`{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False","reason":%q,"message":%q}]}}`,
		nodesetup.ConditionReason, nodesetup.ConditionMessage)
	if err := patchNode(agent, own, cond, "status"); err != nil {
		t.Errorf("agent on %s patching its own Node's status: %v; want allowed", own, err)
	}
	refused := []struct {
		what, node, patch, msg string
		sub                    []string
	}{
		{"another Node's annotations", other, set, "may only update the Node it runs on", nil},
		{"another Node's status", other, cond, "may only update the Node it runs on", []string{"status"}},
		{"its own Node's spec", own, `{"spec":{"unschedulable":true}}`, "may not change a Node's spec", nil},
	}
	for _, r := range refused {
		err := patchNode(agent, r.node, r.patch, r.sub...)
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("agent on %s patching %s (%s): %v; want refused by the admission policy", own, r.what, r.node, err)
			continue
		}
		if !strings.Contains(err.Error(), r.msg) {
			t.Errorf("agent on %s patching %s: refused with %v; want the policy's %q", own, r.what, err, r.msg)
		}
		t.Logf("agent on %s patching %s: refused: %v", own, r.what, err)
	}
	// Negative control: the admin may make the same change to the other Node.
	if err := patchNode(l.CS, other, set); err != nil {
		t.Errorf("admin patching %s: %v; the patch itself must be valid", other, err)
	}
}
