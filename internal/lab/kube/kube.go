// Package kube holds the lab's small client-go helpers: the admin client,
// polling, and readiness of the API server, nodes and pods.
package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Client returns a clientset for the admin kubeconfig at path.
func Client(path string) (*kubernetes.Clientset, *rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating client: %w", err)
	}
	return cs, cfg, nil
}

// Poll calls f every interval until it returns true, an error, or timeout.
func Poll(ctx context.Context, interval, timeout time.Duration, f func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		done, err := f(ctx)
		if err != nil {
			last = err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// WaitAPIServer waits until the API server answers /readyz.
func WaitAPIServer(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	return Poll(ctx, 200*time.Millisecond, timeout, func(ctx context.Context) (bool, error) {
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(b) == "ok", err
	})
}

// NodeReady reports whether n has condition Ready=True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitNodes waits until every named node satisfies ok.
func WaitNodes(ctx context.Context, cs kubernetes.Interface, names []string, timeout time.Duration, ok func(*corev1.Node) bool) error {
	return Poll(ctx, 500*time.Millisecond, timeout, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil || !ok(node) {
				return false, err
			}
		}
		return true, nil
	})
}

// PodReady reports whether p has condition Ready=True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
