package ctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/client-go/tools/remotecommand"

	"github.com/trellisnet/trellis/internal/connectivity"
)

// AgentDaemonSet and AgentSelector name the shipped agent DaemonSet
// (deploy/trellis.yaml, the Helm chart).
const (
	AgentDaemonSet = "trellis-agent"
	AgentSelector  = "app.kubernetes.io/name=trellis-agent"
	agentContainer = "agent"
	agentBinary    = "/trellis-agent"
)

// ErrNoTrellis is returned (exit 2) by commands that need Trellis on a
// cluster without its agent DaemonSet.
func errNoTrellis(ns string) error {
	return Usage("Trellis is not installed in this cluster (no DaemonSet %s/%s; set --trellis-namespace if it is elsewhere)", ns, AgentDaemonSet)
}

// TrellisInstalled reports whether the agent DaemonSet exists.
func (o *Options) TrellisInstalled(ctx context.Context) (bool, error) {
	cs, err := o.Clientset()
	if err != nil {
		return false, err
	}
	_, err = cs.AppsV1().DaemonSets(o.Namespace).Get(ctx, AgentDaemonSet, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading DaemonSet %s/%s: %w", o.Namespace, AgentDaemonSet, err)
	}
	return true, nil
}

// AgentPods are the agent pods by node name; a cluster without the agent
// DaemonSet is an error (exit 2). When a node has several (a rollout), the
// running one, then the newest, is kept.
func (o *Options) AgentPods(ctx context.Context) (map[string]*corev1.Pod, error) {
	ok, err := o.TrellisInstalled(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errNoTrellis(o.Namespace)
	}
	cs, _ := o.Clientset()
	list, err := cs.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: AgentSelector})
	if err != nil {
		return nil, fmt.Errorf("listing agent pods: %w", err)
	}
	pods := list.Items
	sort.Slice(pods, func(i, j int) bool {
		ri, rj := pods[i].Status.Phase == corev1.PodRunning, pods[j].Status.Phase == corev1.PodRunning
		if ri != rj {
			return ri
		}
		return pods[j].CreationTimestamp.Before(&pods[i].CreationTimestamp)
	})
	out := map[string]*corev1.Pod{}
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName == "" || out[p.Spec.NodeName] != nil {
			continue
		}
		out[p.Spec.NodeName] = p
	}
	return out, nil
}

// Exec runs command in container of pod (kubectl exec, no TTY) and copies
// its stdout to stdout; a non-zero exit or a failed stream is an error that
// carries the command's stderr.
func (o *Options) Exec(ctx context.Context, pod *corev1.Pod, container string, command []string, stdout io.Writer) error {
	return o.exec(ctx, pod, container, command, nil, stdout)
}

// exec is Exec with the command's stdin connected to stdin when not nil.
func (o *Options) exec(ctx context.Context, pod *corev1.Pod, container string, command []string, stdin io.Reader, stdout io.Writer) error {
	cfg, err := o.RESTConfig()
	if err != nil {
		return err
	}
	cs, err := o.Clientset()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	err = connectivity.ExecStream(ctx, cfg, cs, pod, container, command, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: &stderr})
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("exec %s in %s/%s: %s", strings.Join(command, " "), pod.Namespace, pod.Name, msg)
	}
	return nil
}

// AgentGet copies the answer of the agent API path (internal/agentapi) on
// the node of pod to w.
func (o *Options) AgentGet(ctx context.Context, pod *corev1.Pod, path string, w io.Writer) error {
	return o.Exec(ctx, pod, agentContainer, []string{agentBinary, "ctl", "get", path}, w)
}

// AgentStream copies the answer of a streaming agent API path on the node
// of pod to w until the answer ends or ctx is cancelled. The command in the
// agent's container reads its stdin, which stays open while trellisctl
// does: when trellisctl goes away (or ctx ends) the stream closes, the
// command sees end-of-file and exits, so nothing outlives the CLI.
func (o *Options) AgentStream(ctx context.Context, pod *corev1.Pod, path string, w io.Writer) error {
	stdin, hold := io.Pipe()
	stop := context.AfterFunc(ctx, func() { hold.Close() })
	defer stop()
	defer hold.Close()
	return o.exec(ctx, pod, agentContainer, []string{agentBinary, "ctl", "get", "--until-stdin-closed", path}, stdin, w)
}
