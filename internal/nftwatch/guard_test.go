package nftwatch

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

type changes []Change

func (cs changes) Run(_ context.Context, fn func(Change)) error {
	for _, ch := range cs {
		fn(ch)
	}
	return nil
}

// Follow keeps the latest change and triggers once per change; Report
// counts foreign changes only, and observes the repair time only for a
// rewrite after a notification that was not a loss.
func TestGuardFollowsAndReports(t *testing.T) {
	g := NewGuard("trellis_test", "test table")
	triggers := 0
	at := time.Now().Add(-50 * time.Millisecond)
	if err := g.Follow(context.Background(), changes{{Lost: true}, {Gen: 9, PID: 42, Comm: "nft", At: at}}, func() { triggers++ }); err != nil {
		t.Fatal(err)
	}
	if triggers != 2 || g.Latest().PID != 42 {
		t.Fatalf("triggers %d, latest %+v", triggers, g.Latest())
	}
	why := g.Take()
	if why.Gen != 9 || g.Take() != (Change{}) {
		t.Fatalf("Take = %+v, then not cleared", why)
	}
	ctx := context.Background()
	g.Report(ctx, why, false, true)
	if got := testutil.ToFloat64(g.Changes.WithLabelValues(ReasonForeign)); got != 0 {
		t.Errorf("a sync that found its own content counted %v foreign changes", got)
	}
	g.Report(ctx, why, true, true)
	g.Report(ctx, Change{Lost: true, At: at}, true, true) // counted, no repair time
	g.Report(ctx, why, true, false)                       // rewrite failed: no repair time
	if got := testutil.ToFloat64(g.Changes.WithLabelValues(ReasonForeign)); got != 3 {
		t.Errorf("foreign changes = %v, want 3", got)
	}
	var m dto.Metric
	if err := g.Repair.Write(&m); err != nil {
		t.Fatal(err)
	}
	if c := m.GetHistogram().GetSampleCount(); c != 1 {
		t.Errorf("repair observations = %d, want 1 (the rewrite after a notification)", c)
	}
	if s := m.GetHistogram().GetSampleSum(); s < 0.05 {
		t.Errorf("repair time %vs, want at least the 50 ms since the notification", s)
	}
}
