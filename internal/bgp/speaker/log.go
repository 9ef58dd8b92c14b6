package speaker

import (
	"context"
	"log/slog"

	"github.com/go-logr/logr"
)

// gobgpLogger bridges GoBGP's slog output into the agent's logr logger.
// GoBGP logs every FSM transition at info and debug; only warnings and
// errors pass unless the logger is verbose at level 4.
func gobgpLogger(l logr.Logger) *slog.Logger {
	min := slog.LevelWarn
	if l.V(4).Enabled() {
		min = slog.LevelDebug
	}
	return slog.New(&levelHandler{min: min, next: logr.ToSlogHandler(l.WithName("gobgp"))})
}

// levelHandler drops records below min.
type levelHandler struct {
	min  slog.Level
	next slog.Handler
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.next.Enabled(ctx, l)
}

func (h *levelHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.next.Handle(ctx, r)
}

func (h *levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &levelHandler{min: h.min, next: h.next.WithAttrs(as)}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{min: h.min, next: h.next.WithGroup(name)}
}
