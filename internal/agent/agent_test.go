package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/syncrunner"
)

func TestStaleCheck(t *testing.T) {
	calls := 0
	r := syncrunner.New("routing", func(context.Context) error {
		calls++
		if calls > 1 {
			return errors.New("netlink broke")
		}
		return nil
	}, syncrunner.Options{MinInterval: time.Millisecond, MaxInterval: time.Hour})
	now := time.Now()
	check := staleCheck(r, time.Minute, func() time.Time { return now })
	if err := check(); err != nil {
		t.Errorf("before any sync: %v (a starting agent is not unhealthy)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	for r.LastSuccess().IsZero() {
		time.Sleep(time.Millisecond)
	}
	r.Trigger()
	for r.LastError() == nil {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	now = time.Now()
	if err := check(); err != nil {
		t.Errorf("fresh success: %v", err)
	}
	now = time.Now().Add(2 * time.Minute)
	if err := check(); err == nil || !strings.Contains(err.Error(), "netlink broke") {
		t.Errorf("stale: %v, want an error naming the last failure", err)
	}
}
