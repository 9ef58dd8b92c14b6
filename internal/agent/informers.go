package agent

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// informerSet holds the agent's shared informers, one per watched kind,
// built from internal/kubeclient's list/watch sources rather than
// client-go's informer factory (which links every API group). Each trims
// objects (transform, trimForCache by default) before they enter its cache.
type informerSet struct {
	// transform replaces each object before it enters a cache
	// (nil: trimForCache).
	transform cache.TransformFunc
	all       []cache.SharedIndexInformer
	byType    map[reflect.Type]cache.SharedIndexInformer // for find
	wg        sync.WaitGroup
}

// add creates an informer for the objects lw returns (no periodic resync:
// the sync runners repair drift on their own schedule). While the API
// server refuses connections, lw is tried again every second (reconnecting).
func (s *informerSet) add(lw cache.ListerWatcher, obj runtime.Object) (cache.SharedIndexInformer, error) {
	inf := cache.NewSharedIndexInformerWithOptions(newReconnecting(lw, reconnectInterval), obj, cache.SharedIndexInformerOptions{})
	tf := s.transform
	if tf == nil {
		tf = trimForCache
	}
	if err := inf.SetTransform(tf); err != nil {
		return nil, fmt.Errorf("informer for %T: %w", obj, err)
	}
	s.all = append(s.all, inf)
	if s.byType == nil {
		s.byType = map[reflect.Type]cache.SharedIndexInformer{}
	}
	s.byType[reflect.TypeOf(obj)] = inf
	return inf, nil
}

// start runs every informer until ctx is cancelled.
func (s *informerSet) start(ctx context.Context) {
	for _, inf := range s.all {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			inf.RunWithContext(ctx)
		}()
	}
}

// waitForSync blocks until every cache has synced or ctx is cancelled.
func (s *informerSet) waitForSync(ctx context.Context) error {
	return waitForSync(ctx, s.all...)
}

// syncPoll is how often waitForSync looks (client-go's
// WaitForCacheSync looks every 100 ms, which a restart would wait for).
const syncPoll = 5 * time.Millisecond

// waitForSync blocks until the caches of infs have synced or ctx is
// cancelled.
func waitForSync(ctx context.Context, infs ...cache.SharedIndexInformer) error {
	tick := time.NewTicker(syncPoll)
	defer tick.Stop()
	for {
		synced := true
		for _, inf := range infs {
			synced = synced && inf.HasSynced()
		}
		if synced {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("informer caches did not sync: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// wait blocks until the informers started by start have stopped.
func (s *informerSet) wait() { s.wg.Wait() }
