//go:build e2e

package framework

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
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

// SetAgentConfig sets the agents' routing mode and encryption on every
// node and restarts every agent so it reads them. DaemonSet: the ConfigMap
// is patched and the agent pods of all nodes are replaced at once (waiting
// until each is Ready); process mode: each node's configuration file is
// rewritten and its agent killed. "" keeps a setting as it is.
func (l *Lab) SetAgentConfig(t testing.TB, routingMode, encryption string) {
	t.Helper()
	if l.AgentPod() {
		ov := map[string]any{}
		if routingMode != "" {
			ov["routingMode"] = routingMode
		}
		if encryption != "" {
			ov["encryption"] = encryption
		}
		if err := install.SetConfig(context.Background(), l.CS, ov); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, len(l.Nodes()))
		for i, n := range l.Nodes() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = install.RestartAgent(context.Background(), l.CS, n, 2*time.Minute)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, n := range l.Nodes() {
		spec, err := labnode.LoadSpec(l.Paths.Node(n) + "/node.json")
		if err != nil {
			t.Fatal(err)
		}
		mode, enc := spec.RoutingMode, spec.Encryption
		if routingMode != "" {
			mode = routingMode
		}
		if encryption != "" {
			enc = encryption
		}
		if err := labnode.WriteAgentConfig(spec, mode, enc); err != nil {
			t.Fatal(err)
		}
		l.KillAgent(t, n)
	}
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

// MarkOtherBoot makes node's dataplane marker (in its node state file) name
// another boot, as a reboot leaves it: the lab's nodes share one kernel, so
// their boot id cannot change. The plugin then wires no pod on node until
// the agent has programmed the dataplane again.
func (l *Lab) MarkOtherBoot(t testing.TB, node string) {
	t.Helper()
	path := filepath.Join(l.Paths.Node(node), "fs", "var-lib-trellis", "node-state.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if dp, ok := st["dataplane"].(map[string]any); ok {
		dp["bootID"] = "00000000-0000-0000-0000-00000000b007"
	}
	if data, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
