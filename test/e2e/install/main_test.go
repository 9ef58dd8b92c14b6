//go:build e2e

// Package install holds the end-to-end tests of Trellis installed the way
// an operator installs it (the lab's default, --install daemonset): the
// agent in the shipped least-privilege profile, a rolling update and a
// rollback under traffic, and the uninstall (last: it removes Trellis from
// the lab).
package install

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

func TestMain(m *testing.M) { framework.Main(m, &l, 15*time.Minute) }

// requireDaemonSet fails (not skips) unless the lab runs the agent as the
// shipped DaemonSet.
func requireDaemonSet(t *testing.T) {
	t.Helper()
	if l.State.Install.Mode != string(install.DaemonSet) {
		t.Fatalf("install e2e tests need a lab brought up with --install daemonset (this one: %q)", l.State.Install.Mode)
	}
	if len(l.Nodes()) < 3 {
		t.Fatalf("install e2e tests need 3+ nodes, lab has %d", len(l.Nodes()))
	}
}

func agentDaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	ds, err := l.CS.AppsV1().DaemonSets(install.Namespace).Get(context.Background(), install.DaemonSetName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// labCmd runs trellis-lab with args, logs its output and fails t on error.
func labCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(l.Bin, args...).CombinedOutput()
	t.Logf("trellis-lab %v:\n%s", args, out)
	if err != nil {
		t.Fatalf("trellis-lab %v: %v", args, err)
	}
	return string(out)
}

// createPods puts one agnhost pod per given node into a new namespace and
// returns NS/POD refs.
func createPods(t *testing.T, base string, labels map[string]string, nodes []string) (string, []string) {
	t.Helper()
	ns := l.Namespace(t, base, labels)
	var specs []framework.PodSpec
	for i, n := range nodes {
		specs = append(specs, framework.PodSpec{Name: fmt.Sprintf("p%d-%s", i, n), Node: n})
	}
	return ns, l.CreatePods(t, ns, specs, 2*time.Minute)
}
