//go:build e2e

package install

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/kubeclient"
)

// The shipped manifest installs the BGP CRDs, and the agent's real token
// can do with BGP exactly what docs/install.md#privileges says: read the
// BGP objects, write its own BGPNodeStatus and no other node's, read the
// Secret trellis-bgp-passwords and no other Secret. The admin's same
// writes succeed, so the refusals are RBAC's and the policy's.
func TestE2EInstallBGPPrivileges(t *testing.T) {
	requireDaemonSet(t)
	ctx := context.Background()
	nodes := l.Nodes()
	own, other := nodes[0], nodes[1]
	agent, err := kubeclient.New(agentConfig(t, own))
	if err != nil {
		t.Fatal(err)
	}
	served, err := agent.BGP().Served(ctx)
	if err != nil || !served {
		t.Fatalf("bgp.trellis.dev/v1alpha1 served: %v, %v; want the manifest's CRDs installed", served, err)
	}

	ns := "kube-system"
	secrets := l.CS.CoreV1().Secrets(ns)
	for _, name := range []string{v1alpha1.PasswordSecretName, "trellis-e2e-not-bgp"} {
		if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
			Data: map[string][]byte{"tor": []byte("e2e")}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = secrets.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	dyn, err := dynamic.NewForConfig(l.Config)
	if err != nil {
		t.Fatal(err)
	}
	statuses := dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource(kubeclient.ResourceBGPNodeStatuses))
	t.Cleanup(func() {
		for _, n := range []string{own, other} {
			_ = statuses.Delete(context.Background(), n, metav1.DeleteOptions{})
		}
	})

	// Its own status: allowed; another node's: refused by the policy.
	st := func(node string) *v1alpha1.BGPNodeStatus {
		return &v1alpha1.BGPNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: node}, Status: v1alpha1.NodeStatus{Configured: 1}}
	}
	if _, err := agent.BGP().ApplyNodeStatus(ctx, st(own)); err != nil {
		t.Errorf("agent on %s applying its own BGPNodeStatus: %v; want allowed", own, err)
	}
	err = func() error { _, err := agent.BGP().ApplyNodeStatus(ctx, st(other)); return err }()
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "may only write the BGPNodeStatus of the node it runs on") {
		t.Errorf("agent on %s applying %s's BGPNodeStatus: %v; want refused by trellis-agent-own-bgp-status", own, other, err)
	}
	admin, err := kubeclient.New(l.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.BGP().ApplyNodeStatus(ctx, st(other)); err != nil {
		t.Errorf("admin applying %s's BGPNodeStatus: %v; the object itself must be valid", other, err)
	}

	// The passwords Secret, by its name only.
	agentCS := agentClient(t, own)
	if _, err := agentCS.CoreV1().Secrets(ns).Get(ctx, v1alpha1.PasswordSecretName, metav1.GetOptions{}); err != nil {
		t.Errorf("agent reading %s: %v; want allowed", v1alpha1.PasswordSecretName, err)
	}
	if l, err := agentCS.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + v1alpha1.PasswordSecretName}); err != nil || len(l.Items) != 1 {
		t.Errorf("agent listing %s by field selector: %v; want it alone", v1alpha1.PasswordSecretName, err)
	}
	if _, err := agentCS.CoreV1().Secrets(ns).Get(ctx, "trellis-e2e-not-bgp", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent reading another Secret: %v; want forbidden", err)
	}
	if _, err := agentCS.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent listing every Secret: %v; want forbidden", err)
	}
	if _, err := agentCS.CoreV1().Secrets("default").Get(ctx, v1alpha1.PasswordSecretName, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent reading a Secret of that name in another namespace: %v; want forbidden", err)
	}
	// The BGP objects are readable.
	agentDyn, err := dynamic.NewForConfig(agentConfig(t, own))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{kubeclient.ResourceBGPConfigurations, kubeclient.ResourceBGPPeers, kubeclient.ResourceBGPAdvertisements} {
		if _, err := agentDyn.Resource(v1alpha1.SchemeGroupVersion.WithResource(r)).List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("agent listing %s: %v", r, err)
		}
	}
}
