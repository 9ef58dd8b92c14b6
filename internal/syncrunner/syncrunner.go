// Package syncrunner runs a full-state sync function on demand with a
// minimum interval between runs (bursts of triggers coalesce into one run),
// exponential backoff after failures, and a periodic run at the maximum
// interval so that drift made by others is repaired.
//
// It also gives every controller of the agent its shape: a package per
// concern with New(Config) returning a Controller that embeds *Runner (so
// it has Run(ctx), Trigger, Name, LastSuccess and LastError), a Sync method
// computing the full desired state and applying it through a narrow kernel
// interface, and Config.Sync (Options) and Config.Registerer fields.
package syncrunner

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Observer receives the outcome of every sync (metrics hook).
type Observer interface {
	ObserveSync(name string, took time.Duration, err error)
}

// Options tunes a Runner.
type Options struct {
	// MinInterval is the least time between the starts of two syncs.
	MinInterval time.Duration
	// MaxInterval is the longest time without a sync (periodic resync).
	MaxInterval time.Duration
	// BackoffBase is the first retry delay after a failure (default MinInterval or 100ms).
	BackoffBase time.Duration
	// BackoffMax caps the retry delay (default 30s, at most MaxInterval).
	BackoffMax time.Duration
	// Observer, if set, is told about every sync.
	Observer Observer
}

// Runner serialises calls of one sync function.
type Runner struct {
	name    string
	fn      func(context.Context) error
	opts    Options
	trigger chan struct{}
	now     func() time.Time

	mu          sync.Mutex
	lastSuccess time.Time
	lastErr     error
	failures    int
	syncs       uint64
}

// New returns a Runner for fn; call Run to start it.
func New(name string, fn func(context.Context) error, opts Options) *Runner {
	if opts.MinInterval <= 0 {
		opts.MinInterval = 100 * time.Millisecond
	}
	if opts.MaxInterval < opts.MinInterval {
		opts.MaxInterval = opts.MinInterval
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = opts.MinInterval
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 30 * time.Second
	}
	if opts.BackoffMax > opts.MaxInterval {
		opts.BackoffMax = opts.MaxInterval
	}
	return &Runner{name: name, fn: fn, opts: opts, trigger: make(chan struct{}, 1), now: time.Now}
}

// Name returns the runner's name.
func (r *Runner) Name() string { return r.name }

// Trigger asks for a sync soon. It never blocks; triggers coalesce.
func (r *Runner) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// LastSuccess is when the last successful sync finished (zero if none).
func (r *Runner) LastSuccess() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSuccess
}

// LastError is the error of the last sync (nil after a success).
func (r *Runner) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// Syncs is how many syncs have finished, successful or not.
func (r *Runner) Syncs() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.syncs
}

// backoff returns the retry delay after n consecutive failures (n >= 1).
func (r *Runner) backoff(n int) time.Duration {
	d := r.opts.BackoffBase
	for i := 1; i < n && d < r.opts.BackoffMax; i++ {
		d *= 2
	}
	if d > r.opts.BackoffMax {
		d = r.opts.BackoffMax
	}
	return d
}

// Run syncs once immediately, then whenever triggered (no more often than
// MinInterval), after a failure with backoff, and at least every
// MaxInterval. It blocks until ctx is cancelled.
func (r *Runner) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName(r.name)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastStart time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.trigger:
			// Respect the minimum interval, then run (a trigger arriving
			// meanwhile is absorbed by this run).
			if wait := r.opts.MinInterval - r.now().Sub(lastStart); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		case <-timer.C:
		}
		// Drain a pending trigger: this run covers it.
		select {
		case <-r.trigger:
		default:
		}
		lastStart = r.now()
		err := r.fn(ctx)
		took := r.now().Sub(lastStart)
		if r.opts.Observer != nil {
			r.opts.Observer.ObserveSync(r.name, took, err)
		}
		next := r.opts.MaxInterval
		r.mu.Lock()
		r.lastErr = err
		r.syncs++
		if err == nil {
			r.failures = 0
			r.lastSuccess = r.now()
		} else {
			r.failures++
			next = r.backoff(r.failures)
		}
		failures := r.failures
		r.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			logger.Error(err, "Sync failed, will retry", "failures", failures, "retryIn", next)
		} else {
			logger.V(4).Info("Synced", "took", took)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}
