package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
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

// Right after the API server was away, the answers of a server still
// starting (403 before its authorizer syncs, 503) are retried too; long
// after, or never preceded by an outage, they go to the reflector at once.
func TestReconnectingRetriesAStartingServerOnlyAfterAnOutage(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("RBAC: not synced"))
	var lists, watches int
	r := newReconnecting(flaky(2, forbidden, &lists, &watches), time.Millisecond)
	if _, err := r.ListWithContext(context.Background(), metav1.ListOptions{}); !apierrors.IsForbidden(err) || lists != 1 {
		t.Errorf("403 with no outage before: %v after %d calls, want it at once", err, lists)
	}
	now := time.Unix(1000, 0)
	lists = 0
	seq := []error{refused(), io.EOF, forbidden, apierrors.NewServiceUnavailable("starting")}
	lw := &cache.ListWatch{ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
		if lists++; lists <= len(seq) {
			return nil, seq[lists-1]
		}
		return &v1.NodeList{}, nil
	}}
	r = newReconnecting(lw, time.Millisecond)
	r.now = func() time.Time { return now }
	if _, err := r.ListWithContext(context.Background(), metav1.ListOptions{}); err != nil || lists != len(seq)+1 {
		t.Errorf("refused, EOF, 403, 503 then success: %v after %d calls, want success at call %d", err, lists, len(seq)+1)
	}
	now = now.Add(startupGrace + time.Second)
	lists = 2 // the next call answers 403 again
	if _, err := r.ListWithContext(context.Background(), metav1.ListOptions{}); !apierrors.IsForbidden(err) || lists != 3 {
		t.Errorf("403 long after the outage: %v after %d calls, want it at once", err, lists)
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
