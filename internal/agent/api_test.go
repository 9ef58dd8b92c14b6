//go:build kernel

package agent

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/kubeclient"
)

// fakeAPI serves the agent from a fake clientset (tests may link the
// clientset; the agent binary does not).
func fakeAPI(t *testing.T, client *fake.Clientset) api {
	t.Helper()
	s, err := kubeclient.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	lw := func(list func(context.Context, metav1.ListOptions) (runtime.Object, error),
		w func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.ListerWatcher {
		// The fake clientset cannot stream lists; the wrapper says so.
		return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: w}, client)
	}
	core, netv1 := client.CoreV1(), client.NetworkingV1()
	return api{
		lw: kubeclient.ListWatches{
			Nodes: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return core.Nodes().List(ctx, o)
			},
				core.Nodes().Watch),
			Pods: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return core.Pods("").List(ctx, o)
			},
				core.Pods("").Watch),
			Namespaces: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return core.Namespaces().List(ctx, o)
			},
				core.Namespaces().Watch),
			NetworkPolicies: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return netv1.NetworkPolicies("").List(ctx, o)
			}, netv1.NetworkPolicies("").Watch),
		},
		nodes:  core.Nodes(),
		events: &typedcorev1.EventSinkImpl{Interface: core.Events("")},
		scheme: s,
	}
}
