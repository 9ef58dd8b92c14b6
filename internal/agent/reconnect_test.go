package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

func refused() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
}

// flaky fails its first n calls of each kind with err.
func flaky(n int, err error, lists, watches *int) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			if *lists++; *lists <= n {
				return nil, err
			}
			return &v1.NodeList{}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			if *watches++; *watches <= n {
				return nil, err
			}
			return watch.NewFake(), nil
		},
	}
}

// While the API server refuses connections, List and Watch try again
// (the reflector never backs off) and succeed once it answers.
func TestReconnectingRetriesRefusedConnections(t *testing.T) {
	var lists, watches int
	r := newReconnecting(flaky(3, refused(), &lists, &watches), time.Millisecond)
	if _, err := r.ListWithContext(context.Background(), metav1.ListOptions{}); err != nil || lists != 4 {
		t.Errorf("list: %v after %d calls, want success at the 4th", err, lists)
	}
	if w, err := r.WatchWithContext(context.Background(), metav1.ListOptions{}); err != nil || watches != 4 {
		t.Errorf("watch: %v after %d calls, want success at the 4th", err, watches)
	} else {
		w.Stop()
	}
}

// Any other error goes back to the reflector at once; a cancelled context
// ends the retries with the last error.
func TestReconnectingReturnsOtherErrorsAndStops(t *testing.T) {
	var lists, watches int
	forbidden := errors.New("nodes is forbidden")
	r := newReconnecting(flaky(5, forbidden, &lists, &watches), time.Millisecond)
	if _, err := r.ListWithContext(context.Background(), metav1.ListOptions{}); !errors.Is(err, forbidden) || lists != 1 {
		t.Errorf("list: %v after %d calls, want the error at once", err, lists)
	}
	lists = 0
	r = newReconnecting(flaky(1<<30, refused(), &lists, &watches), 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := r.ListWithContext(ctx, metav1.ListOptions{}); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("list with a cancelled context: %v after %v, want the refused error soon", err, time.Since(start))
	}
	if lists < 2 {
		t.Errorf("%d list calls before the context ended, want retries", lists)
	}
}

// The wrapper passes on whether the source can stream lists.
func TestReconnectingWatchListSemantics(t *testing.T) {
	var lists, watches int
	plain := flaky(0, nil, &lists, &watches)
	if newReconnecting(plain, time.Second).IsWatchListSemanticsUnSupported() {
		t.Error("plain ListWatch reported as not supporting watch-list semantics")
	}
	wrapped := cache.ToListWatcherWithWatchListSemantics(plain, fake.NewClientset())
	if !newReconnecting(wrapped, time.Second).IsWatchListSemanticsUnSupported() {
		t.Error("a fake clientset's ListWatch reported as supporting watch-list semantics")
	}
}
