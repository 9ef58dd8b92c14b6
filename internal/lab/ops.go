package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/pki"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// minimalRBAC is used when the shipped deploy/rbac.yaml is not there yet.
const minimalRBAC = `apiVersion: v1
kind: ServiceAccount
metadata: {name: trellis-agent, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: trellis-agent}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch, patch, update]
- apiGroups: [""]
  resources: [nodes/status]
  verbs: [patch, update]
- apiGroups: [""]
  resources: [pods, namespaces, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: trellis-agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-agent}
subjects:
- {kind: ServiceAccount, name: trellis-agent, namespace: kube-system}
`

// Kubectl runs the pinned kubectl against the lab with the admin kubeconfig.
func Kubectl(ctx context.Context, p state.Paths, st *state.State, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, st.Binaries["kubectl"], append([]string{"--kubeconfig", p.AdminKubeconfig()}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// setupAgentAccess applies the agent's RBAC (the shipped manifest if present)
// and writes the agents' kubeconfig with a ServiceAccount token.
func setupAgentAccess(ctx context.Context, e Env, p state.Paths, t topology.Topology, cs kubernetes.Interface) error {
	st, err := state.LoadState(p)
	if err != nil {
		return err
	}
	manifest := filepath.Join(e.Deploy, "rbac.yaml")
	if data, err := os.ReadFile(manifest); err == nil {
		if _, err := Kubectl(ctx, p, st, string(data), "apply", "-f", "-"); err != nil {
			return err
		}
	} else {
		e.logf("trellis-lab: %s not found; applying a minimal agent RBAC", manifest)
		if _, err := Kubectl(ctx, p, st, minimalRBAC, "apply", "-f", "-"); err != nil {
			return err
		}
	}
	exp := int64(7 * 24 * 3600)
	var tok *authv1.TokenRequest
	err = kube.Poll(ctx, 200*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, error) {
		var err error
		tok, err = cs.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "trellis-agent",
			&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("requesting a token for kube-system/trellis-agent: %w", err)
	}
	return pki.WriteAgentKubeconfig(p, t, tok.Status.Token)
}

// writeFallbackCNIConfig writes, for each node, the conflist the agent would
// write, with the node's pod CIDR given directly (ipam.subnets): used only
// while the agent does not exist, so pods can still start.
func writeFallbackCNIConfig(ctx context.Context, p state.Paths, cs kubernetes.Interface, t topology.Topology) error {
	for _, n := range t.Nodes {
		kn, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading node %s: %w", n.Name, err)
		}
		// 1.0.0: Debian's containerd 1.6 (libcni 1.1) rejects 1.1.0 results.
		conf := map[string]any{"cniVersion": "1.0.0", "name": "trellis", "plugins": []any{map[string]any{
			"type": "trellis-cni", "mtu": 1500,
			"ipam":    map[string]any{"dataDir": "/var/lib/trellis/ipam", "subnets": kn.Spec.PodCIDRs},
			"logFile": "/var/log/trellis/cni.log", "logLevel": "info",
		}}}
		data, err := json.MarshalIndent(conf, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding conflist: %w", err)
		}
		s := node.NewSpec(p, n, nil, nil, "")
		if err := node.CopyFile(filepath.Join(p.Node(n.Name), "fs", "opt-trellis", "bin", "trellis-cni"), s.HostPath("/opt/cni/bin/trellis-cni"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(s.HostPath("/etc/cni/net.d/10-trellis.conflist"), data, 0o644); err != nil {
			return fmt.Errorf("writing conflist for %s: %w", n.Name, err)
		}
	}
	return nil
}
