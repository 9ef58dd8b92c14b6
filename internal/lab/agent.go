package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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

// setupAgentAccess applies the shipped RBAC manifest (deploy/rbac.yaml, and
// nothing broader: a permission the agent lacks fails in the lab as it would
// in a cluster) and writes the agents' kubeconfig with a ServiceAccount token.
func setupAgentAccess(ctx context.Context, e Env, p state.Paths, t topology.Topology, cs kubernetes.Interface) error {
	st, err := state.LoadState(p)
	if err != nil {
		return err
	}
	manifest := filepath.Join(e.Deploy, "rbac.yaml")
	data, err := os.ReadFile(manifest)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the agent's RBAC manifest %s does not exist (the lab applies exactly the shipped deploy/rbac.yaml; point --deploy-dir at the repository's deploy/)", manifest)
	}
	if err != nil {
		return fmt.Errorf("reading the agent's RBAC manifest: %w", err)
	}
	if _, err := Kubectl(ctx, p, st, string(data), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("applying %s: %w", manifest, err)
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

// writeStaticCNI prepares every node for pods without the agent (the node's
// pod CIDR from the API, the agent's conflist renderer): same-node traffic
// only.
func writeStaticCNI(ctx context.Context, p state.Paths, cs kubernetes.Interface, t topology.Topology) error {
	for _, n := range t.Nodes {
		kn, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading node %s: %w", n.Name, err)
		}
		var cidrs []netip.Prefix
		for _, c := range kn.Spec.PodCIDRs {
			pfx, err := netip.ParsePrefix(c)
			if err != nil {
				return fmt.Errorf("node %s: pod CIDR %q: %w", n.Name, c, err)
			}
			cidrs = append(cidrs, pfx)
		}
		if err := node.WriteStaticCNI(node.NewSpec(p, n, nil, nil, "", true), cidrs); err != nil {
			return err
		}
	}
	return nil
}
