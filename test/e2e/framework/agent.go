//go:build e2e

package framework

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/install"
	labnode "github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/proc"
)

// The agent helpers work in every install mode: the DaemonSet (the agent is
// a pod, reached through the API and its container's cgroup) and process
// mode (the node supervisor's child).

// AgentPod reports whether the lab runs the agent as a DaemonSet pod.
func (l *Lab) AgentPod() bool { return l.State.Install.AgentPod() }

// AgentPID returns the PID of the agent process on node (0 if none runs).
func (l *Lab) AgentPID(t testing.TB, node string) int {
	t.Helper()
	if l.AgentPod() {
		pid, err := install.AgentPID(context.Background(), l.CS, node)
		if err != nil {
			return 0
		}
		return pid
	}
	np, err := labnode.ReadPIDs(l.Paths.Node(node))
	if err != nil {
		t.Fatalf("pids of %s: %v", node, err)
	}
	if p := np.PIDs["trellis-agent"]; p != 0 && proc.Alive(p, "trellis-agent") {
		return p
	}
	return 0
}

// KillAgent kills the agent on node with SIGKILL (a crash) and waits until
// a new agent process runs: kubelet restarts the container (DaemonSet), the
// node supervisor restarts the process (process mode).
func (l *Lab) KillAgent(t testing.TB, node string) {
	t.Helper()
	old := l.AgentPID(t, node)
	args := []string{"restart-agent", node}
	if l.AgentPod() {
		args = append(args, "--kill")
	}
	if out, err := exec.Command(l.Bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("trellis-lab %v: %v\n%s", args, err, out)
	}
	l.waitNewAgent(t, node, old, "kill -9")
}

// waitNewAgent waits until node runs an agent process other than old.
func (l *Lab) waitNewAgent(t testing.TB, node string, old int, after string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if p := l.AgentPID(t, node); p != 0 && p != old {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new agent on %s within 90s after %s", node, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RestartAgent restarts the agent on node the way its install mode does
// (`trellis-lab restart-agent`: delete the pod and wait for the new one
// Ready / kill the process) and waits until a new agent process runs.
func (l *Lab) RestartAgent(t testing.TB, node string) {
	t.Helper()
	old := l.AgentPID(t, node)
	if out, err := exec.Command(l.Bin, "restart-agent", node).CombinedOutput(); err != nil {
		t.Fatalf("restart-agent %s: %v\n%s", node, err, out)
	}
	l.waitNewAgent(t, node, old, "restart-agent")
}

// SetAgentMode changes the agent's routing mode on node and restarts it
// there. DaemonSet: the ConfigMap is cluster-wide, so it is patched (once
// per value) and node's agent pod is replaced; process mode: the node's
// configuration file is rewritten. mode "" restores the lab's mode.
func (l *Lab) SetAgentMode(t testing.TB, node, mode string) {
	t.Helper()
	if mode == "" {
		mode = l.State.Topology.Options.RoutingMode
	}
	if l.AgentPod() {
		if err := install.SetConfig(context.Background(), l.CS, map[string]any{"routingMode": mode}); err != nil {
			t.Fatal(err)
		}
		l.RestartAgent(t, node)
		return
	}
	spec, err := labnode.LoadSpec(l.Paths.Node(node) + "/node.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := labnode.WriteAgentConfig(spec, mode, spec.Encryption); err != nil {
		t.Fatal(err)
	}
	l.KillAgent(t, node)
}

// AgentLogs returns the last lines of the agent's log on node
// (`trellis-lab logs NODE trellis-agent`: the pod's log in DaemonSet mode).
func (l *Lab) AgentLogs(t testing.TB, node string, tail int) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(l.Bin, "logs", node, "trellis-agent", fmt.Sprintf("--tail=%d", tail))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Logf("logs of the agent on %s: %v", node, err)
	}
	return out.String()
}

// KillAgentCmd is the trellis-lab command that kills -9 the agent on node
// (and, in DaemonSet mode, waits until its container is Ready again), for
// tests that run it in the background.
func (l *Lab) KillAgentCmd(node string) *exec.Cmd {
	if l.AgentPod() {
		return exec.Command(l.Bin, "restart-agent", node, "--kill")
	}
	return exec.Command(l.Bin, "restart-agent", node)
}
