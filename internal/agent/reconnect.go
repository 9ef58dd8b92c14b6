package agent

import (
	"context"
	"math/rand/v2"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
)

// reconnectInterval is how often an informer tries the API server again
// while it refuses connections (plus up to as much again of jitter, so
// that the nodes do not all list at the same instant when it is back).
const reconnectInterval = time.Second

// reconnecting is a ListerWatcher whose List and Watch, while the API
// server refuses connections, try again every reconnectInterval instead of
// returning the error. The reflector behind a shared informer would back
// off exponentially, up to a wait of 30–60 s, so after an outage of the
// API server the agent would learn what changed meanwhile only up to a
// minute after its return; with this wrapper, within about a second. Any
// other error is returned at once, to the reflector's own handling.
type reconnecting struct {
	inner    cache.ListerWatcherWithContext
	raw      cache.ListerWatcher
	interval time.Duration
}

var (
	_ cache.ListerWatcher            = (*reconnecting)(nil)
	_ cache.ListerWatcherWithContext = (*reconnecting)(nil)
)

func newReconnecting(lw cache.ListerWatcher, interval time.Duration) *reconnecting {
	return &reconnecting{inner: cache.ToListerWatcherWithContext(lw), raw: lw, interval: interval}
}

// retry calls f until it succeeds, fails otherwise than by a refused
// connection, or ctx is done (then it returns f's last error).
func retry[T any](ctx context.Context, interval time.Duration, f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err == nil || !utilnet.IsConnectionRefused(err) {
			return v, err
		}
		t := time.NewTimer(interval + rand.N(interval+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
	}
}

func (r *reconnecting) ListWithContext(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
	return retry(ctx, r.interval, func() (runtime.Object, error) { return r.inner.ListWithContext(ctx, o) })
}

func (r *reconnecting) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return retry(ctx, r.interval, func() (watch.Interface, error) { return r.inner.WatchWithContext(ctx, o) })
}

// List and Watch serve callers without a context (none in the agent).
func (r *reconnecting) List(o metav1.ListOptions) (runtime.Object, error) {
	return r.ListWithContext(context.Background(), o)
}

func (r *reconnecting) Watch(o metav1.ListOptions) (watch.Interface, error) {
	return r.WatchWithContext(context.Background(), o)
}

// IsWatchListSemanticsUnSupported passes the wrapped source's answer on
// (fake clientsets in tests cannot stream lists).
func (r *reconnecting) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(r.raw)
}
