package ctl

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/trellisnet/trellis/internal/ctl/conntest"
	"github.com/trellisnet/trellis/internal/lab/images"
)

func TestConnectivityDefaultImageIsTheLabsAgnhost(t *testing.T) {
	if conntest.DefaultImage != images.AgnhostImage {
		t.Fatalf("default --image %s, the lab imports %s", conntest.DefaultImage, images.AgnhostImage)
	}
}

func TestConnectivityBadInputExit2(t *testing.T) {
	for _, args := range [][]string{
		{"connectivity", "test", "--test", "("},
		{"connectivity", "test", "--test", "no-such-scenario"},
		{"connectivity", "test", "-o", "wide"},
	} {
		var out, errOut bytes.Buffer
		if got := Run(context.Background(), "v", args, &out, &errOut); got != ExitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, got, errOut.String())
		}
	}
}

func readyNode(name, ip string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
}

// runConnectivity runs `connectivity test` on a fake cluster whose pods
// are given status by podStatus when created.
func runConnectivity(t *testing.T, cs *fake.Clientset, podStatus func(*corev1.Pod)) (int, string) {
	t.Helper()
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		podStatus(p)
		return false, nil, nil
	})
	root, o := NewRootCommand("v", &bytes.Buffer{}, &bytes.Buffer{})
	o.SetClients(&rest.Config{}, cs)
	var errOut bytes.Buffer
	o.ErrOut = &errOut
	root.SetArgs([]string{"connectivity", "test", "--ready-timeout", "1s", "--cleanup-timeout", "2s"})
	err := root.ExecuteContext(context.Background())
	if err != nil {
		errOut.WriteString(err.Error())
	}
	ns, lerr := cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{LabelSelector: conntest.LabelTest})
	if lerr != nil || len(ns.Items) != 0 {
		t.Errorf("namespaces left behind: %v %v", ns, lerr)
	}
	return ExitCode(err), errOut.String()
}

func TestConnectivityUnschedulableSaysWhichNodeAndWhy(t *testing.T) {
	cs := fake.NewClientset(readyNode("n1", "10.0.0.1"), readyNode("n2", "10.0.0.2"))
	code, msg := runConnectivity(t, cs, func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: "Unschedulable", Message: "0/2 nodes are available: 2 Insufficient cpu"}}
	})
	if code != ExitFailed {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{"on node n1", "on node n2", "Insufficient cpu"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestConnectivityMissingImageIsBadInput(t *testing.T) {
	cs := fake.NewClientset(readyNode("n1", "10.0.0.1"))
	code, msg := runConnectivity(t, cs, func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "agnhost", State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}}}}
	})
	if code != ExitUsage || !strings.Contains(msg, "ErrImagePull") {
		t.Errorf("exit %d (%s), want 2 naming ErrImagePull", code, msg)
	}
}

func TestConnectivityNoSchedulableNode(t *testing.T) {
	n := readyNode("n1", "10.0.0.1")
	n.Spec.Unschedulable = true
	code, msg := runConnectivity(t, fake.NewClientset(n), func(*corev1.Pod) {})
	if code != ExitFailed || !strings.Contains(msg, "n1: cordoned") {
		t.Errorf("exit %d (%s), want 1 naming the cordoned node", code, msg)
	}
}
