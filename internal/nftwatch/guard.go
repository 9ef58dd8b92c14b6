package nftwatch

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Guard is the table guard of a controller that reads its table back at
// every sync (internal/masq, internal/wireguard/strict). Follow runs the
// table's watch, keeping the latest Change and triggering a sync for each;
// the sync takes that Change (Take), compares the table with what it left
// there last time, and Reports the outcome: a table that no longer holds
// it was changed by another process, which is logged (naming the process)
// and counted, and the time from the notification to the rewrite is
// observed.
type Guard struct {
	*Metrics
	table string // "masquerade table", in the log

	mu   sync.Mutex
	last Change // latest notification (zero: none since the last Take)
}

// NewGuard returns the guard of the controller whose metrics namespace is
// namespace (e.g. trellis_masq); table names the table in the log and the
// metrics' help.
func NewGuard(namespace, table string) *Guard {
	return &Guard{Metrics: NewMetrics(namespace, table), table: table}
}

// Runner reports the committed transactions touching a table (Watch.Run).
type Runner interface {
	Run(ctx context.Context, fn func(Change)) error
}

// Follow runs w until ctx ends, keeping each Change and calling trigger.
func (g *Guard) Follow(ctx context.Context, w Runner, trigger func()) error {
	return w.Run(ctx, func(ch Change) {
		g.mu.Lock()
		g.last = ch
		g.mu.Unlock()
		trigger()
	})
}

// Latest returns the latest Change without clearing it.
func (g *Guard) Latest() Change {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last
}

// Take returns and clears the latest Change (at the start of a sync).
func (g *Guard) Take() Change {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := g.last
	g.last = Change{}
	return ch
}

// Report records a sync's finding: foreign when the table no longer held
// what the previous sync left there, rewritten when the sync then
// committed its content. why is the Change the sync took.
func (g *Guard) Report(ctx context.Context, why Change, foreign, rewritten bool) {
	if !foreign {
		return
	}
	g.Changes.WithLabelValues(ReasonForeign).Inc()
	klog.FromContext(ctx).Info("Another process changed the "+g.table+"; rewriting it",
		"generation", why.Gen, "pid", why.PID, "process", why.Comm)
	if rewritten && !why.At.IsZero() && !why.Lost {
		g.Repair.Observe(time.Since(why.At).Seconds())
	}
}
