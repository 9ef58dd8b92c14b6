package netnstest

import (
	"context"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// RunGuarded runs a controller with a table guard until ctx ends: run (the
// controller's runner) on a thread inside n, so that the nft it executes
// programs n, and watch (following its table's notifications, opened in n)
// beside it. The returned function waits for both to end (cancel ctx first).
func RunGuarded(ctx context.Context, t *testing.T, n ns.NetNS, run func(context.Context), watch func(context.Context) error) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = n.Do(func(ns.NetNS) error { run(ctx); return nil })
	}()
	go func() {
		defer wg.Done()
		if err := watch(ctx); err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	return wg.Wait
}
