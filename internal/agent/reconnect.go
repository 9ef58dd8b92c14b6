package agent

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// startupGrace is how long after the API server was last seen away the
// errors of a server still starting (401, 403 before its authorizer has
// synced, 429, 500, 503, 504) are retried like a refused connection.
const startupGrace = time.Minute

// reconnecting is a ListerWatcher whose List and Watch, while the API
// server is away (connections refused, reset or cut short) and for
// startupGrace after that while it answers as a server still starting,
// try again every reconnectInterval instead of returning the error. The
// reflector behind a shared informer would back off exponentially on each
// error, up to a wait of 30–60 s, so after an outage of the API server the
// agent would learn what changed meanwhile only up to a minute after its
// return; with this wrapper, within about a second. Any other error, and a
// starting server's error outside the grace period (a real RBAC problem),
// is returned at once, to the reflector's own handling.
type reconnecting struct {
	inner    cache.ListerWatcherWithContext
	raw      cache.ListerWatcher
	interval time.Duration
	now      func() time.Time
	lastAway atomic.Int64 // unix nanoseconds when the API server was last seen away
}

var (
	_ cache.ListerWatcher            = (*reconnecting)(nil)
	_ cache.ListerWatcherWithContext = (*reconnecting)(nil)
)

func newReconnecting(lw cache.ListerWatcher, interval time.Duration) *reconnecting {
	return &reconnecting{inner: cache.ToListerWatcherWithContext(lw), raw: lw, interval: interval, now: time.Now}
}

// serverAway: the connection was refused, reset or ended early.
func serverAway(err error) bool {
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err)
}

// serverStarting: an answer a kube-apiserver gives while it starts.
func serverStarting(err error) bool {
	return apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) ||
		apierrors.IsServerTimeout(err)
}

// transient reports whether err should be retried here.
func (r *reconnecting) transient(err error) bool {
	now := r.now()
	if serverAway(err) {
		r.lastAway.Store(now.UnixNano())
		return true
	}
	last := r.lastAway.Load()
	return last != 0 && serverStarting(err) && now.Sub(time.Unix(0, last)) < startupGrace
}

// retry calls f until it succeeds, fails with an error that is not
// transient, or ctx is done (then it returns f's last error).
func retry[T any](ctx context.Context, r *reconnecting, f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err == nil || !r.transient(err) {
			return v, err
		}
		t := time.NewTimer(r.interval + rand.N(r.interval+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
	}
}

func (r *reconnecting) ListWithContext(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
	return retry(ctx, r, func() (runtime.Object, error) { return r.inner.ListWithContext(ctx, o) })
}

func (r *reconnecting) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return retry(ctx, r, func() (watch.Interface, error) { return r.inner.WatchWithContext(ctx, o) })
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
