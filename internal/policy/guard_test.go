package policy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/nftwatch"
)

// fakeWatch is a ruleset generation and a notification stream driven by
// the test.
type fakeWatch struct {
	mu      sync.Mutex
	gen     uint32
	genErr  error
	fn      func(nftwatch.Change)
	started chan struct{}
}

func (f *fakeWatch) Generation() (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen, f.genErr
}

func (f *fakeWatch) Run(ctx context.Context, fn func(nftwatch.Change)) error {
	f.mu.Lock()
	f.fn = fn
	f.mu.Unlock()
	fn(nftwatch.Change{Lost: true, At: time.Now()})
	close(f.started)
	<-ctx.Done()
	return nil
}

// commit is a transaction touching the table: the generation advances, and
// its notification is delivered now (notify) or returned for later.
func (f *fakeWatch) commit(notify bool) nftwatch.Change {
	f.mu.Lock()
	f.gen++
	ch := nftwatch.Change{Gen: f.gen, PID: 42, Comm: "nft", At: time.Now()}
	fn := f.fn
	f.mu.Unlock()
	if notify {
		fn(ch)
	}
	return ch
}

// TestGuardTellsOwnCommitsFromForeignOnes: the guard trusts nothing until
// its watch runs and after any doubt, ignores the controller's own
// commits whenever their notification arrives, and taints the table for a
// foreign commit, one made while the controller's was in flight, lost
// notifications, and an unreadable generation.
func TestGuardTellsOwnCommitsFromForeignOnes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fw := &fakeWatch{started: make(chan struct{})}
	triggers := 0
	g := newGuard(fw, nftwatch.NewMetrics(metricsNamespace, "policy table"), func() { triggers++ })
	if g.trusted() {
		t.Fatal("trusted before the watch runs")
	}
	go func() { _ = g.run(ctx) }()
	<-fw.started
	if g.trusted() {
		t.Fatal("trusted right after the watch started (what happened before is unknown)")
	}
	tainted := func() bool { at, _ := g.take(); return !at.IsZero() }
	if !tainted() || !g.trusted() {
		t.Fatal("the watch start must taint once; trusted after the rewrite took the taint")
	}
	own := func(notifyInside bool) {
		t.Helper()
		var ch nftwatch.Change
		if err := g.commit(ctx, func() error { ch = fw.commit(notifyInside); return nil }); err != nil {
			t.Fatal(err)
		}
		if !notifyInside {
			g.observe(g.logger(), ch)
		}
	}
	own(true)
	own(false)
	if tainted() {
		t.Fatal("the controller's own commits tainted the table")
	}
	before := triggers
	ch := fw.commit(true) // someone else
	at, why := g.take()
	if at.IsZero() || why.Gen != ch.Gen || why.PID != 42 || triggers == before {
		t.Fatalf("a foreign commit: tainted at %v by %+v (triggers %d -> %d), want gen %d", at, why, before, triggers, ch.Gen)
	}
	// Someone else commits to another table while the controller commits:
	// the controller's own notification, before or after its commit
	// returns, is still its own.
	for _, inside := range []bool{true, false} {
		var ch nftwatch.Change
		if err := g.commit(ctx, func() error {
			fw.mu.Lock()
			fw.gen++ // another table: no notification for this one
			fw.mu.Unlock()
			ch = fw.commit(inside)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !inside {
			g.observe(g.logger(), ch)
		}
		if tainted() {
			t.Fatalf("a commit to another table during the controller's own tainted the table (notified inside: %v)", inside)
		}
	}
	if err := g.commit(ctx, func() error {
		fw.commit(true) // someone else, while the controller commits
		fw.commit(true)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !tainted() {
		t.Fatal("a foreign commit during the controller's own went unnoticed")
	}
	late := nftwatch.Change{}
	if err := g.commit(ctx, func() error {
		fw.commit(false) // someone else; both notifications arrive late
		late = fw.commit(false)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	g.observe(g.logger(), nftwatch.Change{Gen: late.Gen - 1, At: time.Now()})
	g.observe(g.logger(), late)
	if !tainted() {
		t.Fatal("a foreign commit during the controller's own, notified late, went unnoticed")
	}
	fw.fn(nftwatch.Change{Lost: true, At: time.Now()})
	if !tainted() {
		t.Fatal("lost notifications did not taint the table")
	}
	fw.mu.Lock()
	fw.genErr = errors.New("no generation")
	fw.mu.Unlock()
	if err := g.commit(ctx, func() error { fw.commit(true); return nil }); err != nil {
		t.Fatal(err)
	}
	if !tainted() {
		t.Fatal("a commit whose generation could not be read did not taint the table")
	}
	g.restore(time.Now(), nftwatch.Change{Gen: 7})
	if g.trusted() {
		t.Fatal("a failed rewrite's taint was not restored")
	}
}
