package speaker

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/go-logr/logr"
)

// gobgpLogger bridges GoBGP's slog output into the agent's logr logger.
// GoBGP logs every FSM transition at info and debug; only warnings and
// errors pass unless the logger is verbose at level 4.
//
// stopped is set once the speaker has stopped BGP itself: GoBGP's Stop
// (which also ends its BFD server) then asks for StopBgp again and logs
// the refusal as an error, which is dropped.
func gobgpLogger(l logr.Logger, stopped *atomic.Bool) *slog.Logger {
	min := slog.LevelWarn
	if l.V(4).Enabled() {
		min = slog.LevelDebug
	}
	return slog.New(&levelHandler{min: min, stopped: stopped, next: logr.ToSlogHandler(l.WithName("gobgp"))})
}

// levelHandler drops records below min.
type levelHandler struct {
	min     slog.Level
	stopped *atomic.Bool
	next    slog.Handler
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.next.Enabled(ctx, l)
}

func (h *levelHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.stopped.Load() && r.Message == "failed to stop BGP server" {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &levelHandler{min: h.min, stopped: h.stopped, next: h.next.WithAttrs(as)}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{min: h.min, stopped: h.stopped, next: h.next.WithGroup(name)}
}
