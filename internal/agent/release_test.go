package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/syncrunner"
)

// The heap is released once every runner has synced successfully once, not
// before: a runner that keeps failing holds it back until ctx ends.
func TestReleaseAfterFirstSyncs(t *testing.T) {
	ok := syncrunner.New("ok", func(context.Context) error { return nil }, syncrunner.Options{MinInterval: time.Millisecond, MaxInterval: time.Hour})
	failing := syncrunner.New("failing", func(context.Context) error { return errors.New("no") }, syncrunner.Options{MinInterval: time.Millisecond, MaxInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ok.Run(ctx)
	go failing.Run(ctx)
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if releaseAfterFirstSyncs(short, []*syncrunner.Runner{ok, failing}, time.Millisecond) {
		t.Fatal("released while a runner had not synced successfully")
	}
	if ok.LastSuccess().IsZero() {
		t.Fatal("the succeeding runner never synced; the test proves nothing")
	}
	wait, stop2 := context.WithTimeout(ctx, 5*time.Second)
	defer stop2()
	if !releaseAfterFirstSyncs(wait, []*syncrunner.Runner{ok}, time.Millisecond) {
		t.Fatal("not released after every runner synced")
	}
}
