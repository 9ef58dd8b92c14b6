package syncrunner

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type recorder struct {
	mu   sync.Mutex
	errs []error
}

func (r *recorder) ObserveSync(_ string, _ time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func start(t *testing.T, r *Runner) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestRunsAtStartAndCoalescesBursts(t *testing.T) {
	var calls atomic.Int32
	r := New("t", func(context.Context) error { calls.Add(1); return nil }, Options{MinInterval: 200 * time.Millisecond, MaxInterval: time.Hour})
	start(t, r)
	waitFor(t, "initial sync", func() bool { return calls.Load() == 1 })
	for i := 0; i < 100; i++ {
		r.Trigger()
	}
	waitFor(t, "triggered sync", func() bool { return calls.Load() >= 2 })
	time.Sleep(500 * time.Millisecond)
	if n := calls.Load(); n != 2 {
		t.Errorf("100 triggers gave %d syncs after the first, want exactly 1 (coalesced)", n-1)
	}
	if r.LastSuccess().IsZero() {
		t.Error("LastSuccess not recorded")
	}
}

func TestMinIntervalIsRespected(t *testing.T) {
	var mu sync.Mutex
	var starts []time.Time
	r := New("t", func(context.Context) error {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return nil
	}, Options{MinInterval: 150 * time.Millisecond, MaxInterval: time.Hour})
	start(t, r)
	stop := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(stop) {
		r.Trigger()
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(starts) < 3 {
		t.Fatalf("only %d syncs under constant triggering", len(starts))
	}
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < 100*time.Millisecond { // slack for scheduling delay under load
			t.Errorf("syncs %d and %d only %v apart, min interval 150ms", i-1, i, gap)
		}
	}
}

func TestRetriesWithBackoffThenPeriodic(t *testing.T) {
	var calls atomic.Int32
	obs := &recorder{}
	r := New("t", func(context.Context) error {
		if calls.Add(1) <= 3 {
			return errors.New("boom")
		}
		return nil
	}, Options{MinInterval: 10 * time.Millisecond, MaxInterval: 300 * time.Millisecond, BackoffBase: 20 * time.Millisecond, Observer: obs})
	start(t, r)
	waitFor(t, "recovery after 3 failures", func() bool { return !r.LastSuccess().IsZero() })
	if r.LastError() != nil {
		t.Errorf("LastError after success = %v", r.LastError())
	}
	n := calls.Load()
	waitFor(t, "periodic resync", func() bool { return calls.Load() > n })
	if got := r.Syncs(); got < 5 {
		t.Errorf("Syncs = %d after 3 failures, a success and a periodic resync, want >= 5", got)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.errs) < 4 || obs.errs[0] == nil || obs.errs[3] != nil {
		t.Errorf("observer saw %v, want 3 errors then success", obs.errs)
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	r := New("t", nil, Options{MinInterval: time.Millisecond, MaxInterval: time.Second, BackoffBase: 100 * time.Millisecond})
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	for i, w := range want {
		if got := r.backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
}
