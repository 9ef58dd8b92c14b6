//go:build e2e

// Package ctl holds the lab e2e tests of trellisctl: every command run as an
// operator runs it (the binary, the lab's admin kubeconfig), against one lab
// shared by the whole suite.
package ctl

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

func TestMain(m *testing.M) { framework.Main(m, &l, 10*time.Minute) }

// result is one trellisctl run.
type result struct {
	Stdout, Stderr string
	Code           int
}

// trellisctl runs bin/trellisctl (beside trellis-lab) with the lab's admin
// kubeconfig and args, bounded by timeout.
func trellisctl(t testing.TB, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	bin := filepath.Join(filepath.Dir(l.Bin), "trellisctl")
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", l.Paths.AdminKubeconfig()}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{Stdout: out.String(), Stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("trellisctl %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("trellisctl %s did not finish within %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), timeout, r.Stdout, r.Stderr)
	}
	t.Logf("trellisctl %s: exit %d\n%s%s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	return r
}

// TestE2ECtlVersionReachesEveryAgent checks the path every per-node command
// takes: trellisctl → API server → exec in the agent's pod → the agent's
// local API socket, on every node.
func TestE2ECtlVersionReachesEveryAgent(t *testing.T) {
	if !l.AgentPod() {
		t.Fatalf("trellisctl reaches agents in their DaemonSet pods; this lab installs Trellis as %q", l.State.Install)
	}
	r := trellisctl(t, time.Minute, "version", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("exit %d", r.Code)
	}
	for _, n := range l.Nodes() {
		if !strings.Contains(r.Stdout, `"node": "`+n+`"`) {
			t.Errorf("no agent version from node %s", n)
		}
	}
	if strings.Contains(r.Stdout, "unreachable") {
		t.Errorf("an agent did not answer")
	}
}
