package install

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/probe"
)

// AgentPod returns the agent pod on node that is not being deleted.
func AgentPod(ctx context.Context, cs kubernetes.Interface, node string) (*corev1.Pod, error) {
	list, err := cs.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: AgentSelector, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("listing agent pods on %s: %w", node, err)
	}
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp == nil {
			return &list.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no trellis-agent pod on node %s", node)
}

// AgentPID returns the PID of the agent container's process on node.
func AgentPID(ctx context.Context, cs kubernetes.Interface, node string) (int, error) {
	_, pid, err := agentProcess(ctx, cs, node)
	return pid, err
}

// agentProcess returns node's agent pod and its container's process.
func agentProcess(ctx context.Context, cs kubernetes.Interface, node string) (*corev1.Pod, int, error) {
	pod, err := AgentPod(ctx, cs, node)
	if err != nil {
		return nil, 0, err
	}
	pids, err := probe.ContainerPIDs(pod, AgentContainer)
	if err != nil {
		return nil, 0, err
	}
	return pod, pids[0], nil
}

func restartCount(p *corev1.Pod) int32 {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == AgentContainer {
			return s.RestartCount
		}
	}
	return 0
}

// RestartAgent deletes node's agent pod, as an operator restarts it
// (`kubectl delete pod`), and waits until its replacement is Ready.
func RestartAgent(ctx context.Context, cs kubernetes.Interface, node string, timeout time.Duration) (*corev1.Pod, error) {
	old, err := AgentPod(ctx, cs, node)
	if err != nil {
		return nil, err
	}
	if err := cs.CoreV1().Pods(Namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("deleting %s: %w", old.Name, err)
	}
	return waitAgent(ctx, cs, node, timeout, func(p *corev1.Pod) bool { return p.UID != old.UID })
}

// KillAgent sends SIGKILL to the agent container's process on node (a
// crash, not a deletion: kubelet restarts the container in the same pod) and
// waits until the container has restarted and the pod is Ready again.
func KillAgent(ctx context.Context, cs kubernetes.Interface, node string, timeout time.Duration) (int, error) {
	pod, pid, err := agentProcess(ctx, cs, node)
	if err != nil {
		return 0, err
	}
	before := restartCount(pod)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("killing the agent (pid %d) on %s: %w", pid, node, err)
	}
	_, err = waitAgent(ctx, cs, node, timeout, func(p *corev1.Pod) bool { return p.UID != pod.UID || restartCount(p) > before })
	return pid, err
}

// waitAgent waits until node's agent pod satisfies ok and is Ready.
func waitAgent(ctx context.Context, cs kubernetes.Interface, node string, timeout time.Duration, ok func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var got *corev1.Pod
	err := kube.Poll(ctx, 100*time.Millisecond, timeout, func(ctx context.Context) (bool, error) {
		p, err := AgentPod(ctx, cs, node)
		if err != nil {
			return false, err
		}
		got = p
		return ok(p) && kube.PodReady(p), nil
	})
	if err != nil {
		return nil, fmt.Errorf("the agent on %s did not come back Ready within %s: %w", node, timeout, err)
	}
	return got, nil
}

// AgentLogs writes the log of node's agent container (the previous
// container's when previous is set); tail < 0 means all lines.
func AgentLogs(ctx context.Context, cs kubernetes.Interface, node string, tail int64, previous bool, w io.Writer) error {
	pod, err := AgentPod(ctx, cs, node)
	if err != nil {
		return err
	}
	o := &corev1.PodLogOptions{Container: AgentContainer, Previous: previous}
	if tail >= 0 {
		o.TailLines = &tail
	}
	rc, err := cs.CoreV1().Pods(Namespace).GetLogs(pod.Name, o).Stream(ctx)
	if err != nil {
		return fmt.Errorf("logs of %s/%s: %w", Namespace, pod.Name, err)
	}
	defer rc.Close()
	_, err = io.Copy(w, rc)
	return err
}

// SetConfig merges overrides into the agent ConfigMap's config.yaml. The
// agents read it when they (re)start: follow with RestartAgent per node.
func SetConfig(ctx context.Context, cs kubernetes.Interface, overrides map[string]any) error {
	cm, err := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading ConfigMap %s/%s: %w", Namespace, ConfigMapName, err)
	}
	merged, err := MergeConfig(cm.Data[ConfigKey], overrides)
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"data": map[string]string{ConfigKey: merged}})
	if err != nil {
		return fmt.Errorf("encoding the ConfigMap patch: %w", err)
	}
	if _, err := cs.CoreV1().ConfigMaps(Namespace).Patch(ctx, ConfigMapName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patching ConfigMap %s/%s: %w", Namespace, ConfigMapName, err)
	}
	return nil
}
