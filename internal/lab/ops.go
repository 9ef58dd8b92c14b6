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
)

// StartComponent spawns c and records it in st.
func StartComponent(p Paths, st *State, labBin string, c Component) error {
	log := p.LogFile(c.Name)
	pid, err := Spawn(labBin, c.Group, c.Netns, false, log, c.Argv, nil)
	if err != nil {
		return err
	}
	st.SetProcess(Process{Name: c.Name, Group: c.Group, PID: pid, Argv: c.Argv, Netns: c.Netns, Log: log})
	return st.Save(p)
}

// forwarderComponent is the loopback forward to the API server.
func forwarderComponent(p Paths, st *State, labBin string) Component {
	t := st.Topology
	return Component{Name: "api-forwarder", Group: p.CgroupRoot() + "/host", Argv: []string{labBin, "__forward",
		"--listen", fmt.Sprintf("127.0.0.1:%d", t.Options.APIPort),
		"--netns", "/run/netns/" + t.ControlPlane.Netns,
		"--target", fmt.Sprintf("%s:%d", t.ControlPlane.Addr, APIPort)}}
}

// StartControlPlane starts etcd, the API server and its loopback forward,
// waits for the API server, then starts the controller manager and scheduler.
func StartControlPlane(ctx context.Context, e Env, p Paths, st *State, labBin string) error {
	comps := ControlPlaneComponents(p, st.Topology, st.Binaries)
	for _, c := range append(comps[:2:2], forwarderComponent(p, st, labBin)) {
		if err := StartComponent(p, st, labBin, c); err != nil {
			return err
		}
	}
	cs, _, err := Client(p.AdminKubeconfig())
	if err != nil {
		return err
	}
	if err := WaitAPIServer(ctx, cs, 90*time.Second); err != nil {
		return fmt.Errorf("API server not ready (see %s): %w", p.LogFile("kube-apiserver"), err)
	}
	for _, c := range comps[2:] {
		if err := StartComponent(p, st, labBin, c); err != nil {
			return err
		}
	}
	return nil
}

// StartNode writes node s's files (if write) and spawns its supervisor.
func StartNode(p Paths, st *State, labBin string, s NodeSpec, write bool) error {
	if write {
		if err := WriteNodeFiles(p, s); err != nil {
			return err
		}
	}
	if err := EnsureNodeCgroups(s.Group); err != nil {
		return err
	}
	argv := []string{labBin, "__node", "--spec", filepath.Join(s.Dir, "node.json")}
	log := filepath.Join(s.Dir, "logs", "supervisor.log")
	pid, err := Spawn(labBin, s.Group+"/daemons", st.Topology.Nodes[nodeIndex(st.Topology, s.Name)].Netns, true, log, argv, nil)
	if err != nil {
		return err
	}
	st.SetProcess(Process{Name: "node/" + s.Name, Group: s.Group, PID: pid, Argv: argv, Log: log})
	return st.Save(p)
}

func nodeIndex(t Topology, name string) int {
	for i, n := range t.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

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
func Kubectl(ctx context.Context, p Paths, st *State, stdin string, args ...string) ([]byte, error) {
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
func setupAgentAccess(ctx context.Context, e Env, p Paths, t Topology, cs kubernetes.Interface) error {
	st, err := LoadState(p)
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
	err = poll(ctx, 200*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, error) {
		var err error
		tok, err = cs.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "trellis-agent",
			&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("requesting a token for kube-system/trellis-agent: %w", err)
	}
	return WriteAgentKubeconfig(p, t, tok.Status.Token)
}

// writeFallbackCNIConfig writes, for each node, the conflist the agent would
// write, with the node's pod CIDR given directly (ipam.subnets): used only
// while the agent does not exist, so pods can still start.
func writeFallbackCNIConfig(ctx context.Context, p Paths, cs kubernetes.Interface, t Topology) error {
	for _, n := range t.Nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading node %s: %w", n.Name, err)
		}
		// 1.0.0: Debian's containerd 1.6 (libcni 1.1) rejects 1.1.0 results.
		conf := map[string]any{"cniVersion": "1.0.0", "name": "trellis", "plugins": []any{map[string]any{
			"type": "trellis-cni", "mtu": 1500,
			"ipam":    map[string]any{"dataDir": "/var/lib/trellis/ipam", "subnets": node.Spec.PodCIDRs},
			"logFile": "/var/log/trellis/cni.log", "logLevel": "info",
		}}}
		data, err := json.MarshalIndent(conf, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding conflist: %w", err)
		}
		s := NewNodeSpec(p, n, nil, nil, "")
		if err := copyFile(filepath.Join(p.Node(n.Name), "fs", "opt-trellis", "bin", "trellis-cni"), s.hostPath("/opt/cni/bin/trellis-cni"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(s.hostPath("/etc/cni/net.d/10-trellis.conflist"), data, 0o644); err != nil {
			return fmt.Errorf("writing conflist for %s: %w", n.Name, err)
		}
	}
	return nil
}
