package policy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/nftwatch"
)

// TableWatch is the kernel side of the table guard: the ruleset generation
// and the notifications of transactions touching the policy table
// (nftwatch.Watch, opened for family inet and TableName).
type TableWatch interface {
	Generation() (uint32, error)
	Run(ctx context.Context, fn func(nftwatch.Change)) error
}

// Reasons a guard asks for a full rewrite (label of the changes metric).
const (
	reasonForeign = nftwatch.ReasonForeign
	reasonUnknown = nftwatch.ReasonUnknown
)

// guard tells the controller's own commits from everybody else's. A sync
// reads the ruleset generation just before and just after its commit: when
// it advanced by exactly one, that generation is the sync's own; when
// others committed meanwhile (usually to other tables), the sync's own is
// the first transaction of that range that touches the table. Every other
// transaction touching the table is foreign: the guard then taints the table, and the next sync rewrites it
// completely, trusting nothing it committed before. While the watch is not
// running, nothing is trusted either: every sync reads the table back.
type guard struct {
	watch   TableWatch
	metrics *nftwatch.Metrics
	onTaint func()

	mu       sync.Mutex
	live     bool
	inflight bool
	own      map[uint32]time.Time
	windows  []window // commits whose own generation is not known exactly
	pending  []nftwatch.Change
	tainted  time.Time // first unrepaired reason to rewrite (zero: none)
	lastWhy  nftwatch.Change
}

// window is a commit of the controller during which others committed too:
// its generation is one of lo..hi. The controller's commit always touches
// the table, so of the transactions in the window that touch it, the first
// `own` are taken as the controller's, the rest are foreign.
type window struct {
	lo, hi uint32
	own    int
	at     time.Time
}

func newGuard(w TableWatch, m *nftwatch.Metrics, onTaint func()) *guard {
	return &guard{watch: w, metrics: m, onTaint: onTaint, own: map[uint32]time.Time{}}
}

func (g *guard) logger() klog.Logger { return klog.Background().WithName("policy") }

// run follows the notifications until ctx ends; the guard is live meanwhile.
func (g *guard) run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("policy")
	err := g.watch.Run(ctx, func(ch nftwatch.Change) { g.observe(logger, ch) })
	g.mu.Lock()
	g.live = false
	g.mu.Unlock()
	if err != nil {
		return fmt.Errorf("watch the policy table: %w", err)
	}
	return nil
}

// observe handles one notification from the watch.
func (g *guard) observe(logger klog.Logger, ch nftwatch.Change) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ch.Lost {
		g.live = true
		g.taintLocked(logger, reasonUnknown, ch)
		return
	}
	if g.inflight {
		g.pending = append(g.pending, ch)
		return
	}
	g.resolveLocked(logger, ch)
}

func (g *guard) resolveLocked(logger klog.Logger, ch nftwatch.Change) {
	if _, ok := g.own[ch.Gen]; ok {
		delete(g.own, ch.Gen)
		return
	}
	for i := range g.windows {
		w := &g.windows[i]
		if ch.Gen-w.lo <= w.hi-w.lo { // lo <= Gen <= hi, modulo wrap-around
			if w.own > 0 {
				w.own--
				return
			}
			break
		}
	}
	g.taintLocked(logger, reasonForeign, ch)
}

func (g *guard) taintLocked(logger klog.Logger, reason string, ch nftwatch.Change) {
	g.metrics.Changes.WithLabelValues(reason).Inc()
	if reason == reasonForeign {
		logger.Info("Another process changed the policy table; rewriting it completely",
			"generation", ch.Gen, "pid", ch.PID, "process", ch.Comm)
	} else {
		logger.V(2).Info("Policy table state unknown (watch started or notifications lost); rewriting it completely")
	}
	if g.tainted.IsZero() {
		g.tainted = ch.At
		if g.tainted.IsZero() {
			g.tainted = time.Now()
		}
		g.lastWhy = ch
	}
	if reason == reasonForeign {
		g.lastWhy = ch
	}
	if g.onTaint != nil {
		g.onTaint()
	}
}

// trusted reports whether a sync may rely on what it committed before: the
// watch is running and nothing foreign happened since.
func (g *guard) trusted() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.live && g.tainted.IsZero()
}

// take clears the taint for the rewrite about to start and returns when it
// began and what caused it (zero time: no taint).
func (g *guard) take() (time.Time, nftwatch.Change) {
	if g == nil {
		return time.Time{}, nftwatch.Change{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t, why := g.tainted, g.lastWhy
	g.tainted, g.lastWhy = time.Time{}, nftwatch.Change{}
	return t, why
}

// restore puts back a taint whose rewrite failed.
func (g *guard) restore(t time.Time, why nftwatch.Change) {
	if g == nil || t.IsZero() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tainted.IsZero() || t.Before(g.tainted) {
		g.tainted, g.lastWhy = t, why
	}
}

// repaired records a rewrite that repaired a foreign change.
func (g *guard) repaired(since time.Time, why nftwatch.Change) {
	if g == nil || since.IsZero() || why.Lost {
		return
	}
	g.metrics.Repair.Observe(time.Since(since).Seconds())
}

// commit runs fn (one nftables transaction) between two reads of the
// ruleset generation and records the generation it committed as the
// sync's own.
func (g *guard) commit(ctx context.Context, fn func() error) error {
	if g == nil {
		return fn()
	}
	logger := klog.FromContext(ctx).WithName("policy")
	g.mu.Lock()
	g.inflight = true
	g.mu.Unlock()
	before, errBefore := g.watch.Generation()
	err := fn()
	after, errAfter := g.watch.Generation()

	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight = false
	pending := g.pending
	g.pending = nil
	switch {
	case errBefore != nil || errAfter != nil:
		g.taintLocked(logger, reasonUnknown, nftwatch.Change{At: time.Now(), Lost: true})
		logger.Error(errors.Join(errBefore, errAfter), "Cannot attribute the policy table's commit")
	case err == nil && after == before+1:
		g.own[after] = time.Now()
	case after != before:
		// Someone else committed while the sync did (most often to another
		// table): the sync's own generation is one of before+1..after.
		w := window{lo: before + 1, hi: after, at: time.Now()}
		if err == nil {
			w.own = 1
		}
		g.windows = append(g.windows, w)
	}
	for _, ch := range pending {
		g.resolveLocked(logger, ch)
	}
	for gen, at := range g.own {
		if time.Since(at) > time.Minute {
			delete(g.own, gen) // its notification never came (lost)
		}
	}
	kept := g.windows[:0]
	for _, w := range g.windows {
		if time.Since(w.at) <= time.Minute {
			kept = append(kept, w)
		}
	}
	g.windows = kept
	return err
}
