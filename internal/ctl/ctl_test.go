package ctl

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		msg  string
	}{
		{[]string{"version", "--client"}, ExitOK, ""},
		{[]string{"no-such-command"}, ExitUsage, "unknown command"},
		{[]string{"version", "--no-such-flag"}, ExitUsage, "unknown flag"},
		{[]string{"version", "extra"}, ExitUsage, "unknown command"},
		{[]string{"version", "--client", "-o", "xml"}, ExitUsage, "unknown output format"},
		{[]string{"--kubeconfig", "/nonexistent/kubeconfig", "version"}, ExitUsage, "kubeconfig"},
	} {
		var out, errOut bytes.Buffer
		got := Run(context.Background(), "v9", tc.args, &out, &errOut)
		if got != tc.want {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, got, tc.want, errOut.String())
		}
		if tc.msg != "" && (!strings.Contains(errOut.String(), tc.msg) || strings.Count(errOut.String(), "\n") != 1) {
			t.Errorf("%v: stderr %q, want one line containing %q", tc.args, errOut.String(), tc.msg)
		}
	}
	if ExitCode(errors.New("x")) != ExitError || ExitCode(Failed("x")) != ExitFailed {
		t.Error("ExitCode mapping is wrong")
	}
}

func TestAgentPodsNeedsTrellis(t *testing.T) {
	o := &Options{Namespace: "kube-system"}
	o.SetClients(&rest.Config{}, fake.NewClientset())
	_, err := o.AgentPods(context.Background())
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("AgentPods without the DaemonSet = %v (exit %d), want exit 2 naming it", err, ExitCode(err))
	}
}

func TestAgentPodsOnePerNodePreferringRunning(t *testing.T) {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: AgentDaemonSet, Namespace: "kube-system"}}
	pod := func(name, node string, phase corev1.PodPhase, age int64) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system",
				Labels:            map[string]string{"app.kubernetes.io/name": "trellis-agent"},
				CreationTimestamp: metav1.Unix(1000-age, 0)},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Phase: phase},
		}
	}
	o := &Options{Namespace: "kube-system"}
	o.SetClients(&rest.Config{}, fake.NewClientset(ds,
		pod("a-old", "a", corev1.PodRunning, 100), pod("a-new", "a", corev1.PodPending, 1),
		pod("b-old", "b", corev1.PodRunning, 100), pod("b-new", "b", corev1.PodRunning, 1),
		pod("unscheduled", "", corev1.PodPending, 1)))
	got, err := o.AgentPods(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"].Name != "a-old" || got["b"].Name != "b-new" {
		names := map[string]string{}
		for n, p := range got {
			names[n] = p.Name
		}
		t.Errorf("AgentPods = %v, want a→a-old (running), b→b-new (newest running)", names)
	}
}

func TestTableAndStructuredOutput(t *testing.T) {
	var buf bytes.Buffer
	tb := NewTable(&buf, "NODE", "STATE")
	tb.Row("n1", "")
	if err := tb.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "NODE   STATE\nn1     -\n" {
		t.Errorf("table = %q", got)
	}
	buf.Reset()
	if err := PrintStructured(&buf, OutputYAML, VersionInfo{Client: "v1"}); err != nil || buf.String() != "client: v1\n" {
		t.Errorf("yaml = %q, %v", buf.String(), err)
	}
}
