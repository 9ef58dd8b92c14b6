// Readiness checks, the Node event handler and the release of memory after
// the first syncs: the parts of the agent's lifecycle around run.

package agent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

func informersSynced(inf cache.SharedIndexInformer) error {
	if !inf.HasSynced() {
		return errors.New("node informer not synced")
	}
	return nil
}

// staleCheck fails when the runner has synced successfully before but not
// within max (its periodic resync keeps succeeding on a healthy node, even
// without the API server, since it works from caches and netlink).
func staleCheck(r *syncrunner.Runner, max time.Duration, now func() time.Time) func() error {
	return func() error {
		last := r.LastSuccess()
		if last.IsZero() {
			return nil
		}
		if age := now().Sub(last); age > max {
			return fmt.Errorf("no successful %s sync for %v (last error: %v)", r.Name(), age.Round(time.Second), r.LastError())
		}
		return nil
	}
}

func readyChecks(rc *routing.Controller, nodeRunner *syncrunner.Runner) []metrics.Check {
	return []metrics.Check{
		{Name: "routing", Fn: func() error {
			if ok, reason := rc.Ready(); !ok {
				return errors.New(reason)
			}
			return nil
		}},
		{Name: "nodesetup", Fn: func() error {
			if nodeRunner.LastSuccess().IsZero() {
				if err := nodeRunner.LastError(); err != nil {
					return err
				}
				return errors.New("no successful sync yet")
			}
			return nil
		}},
	}
}

// nodeHandler triggers the controllers a Node change concerns. Updates that
// touch nothing the agent reads (status heartbeats) are ignored.
func nodeHandler(self string, routeRunner, nodeRunner, masqRunner *syncrunner.Runner) cache.ResourceEventHandler {
	trigger := func(name string) {
		routeRunner.Trigger()
		if masqRunner != nil {
			masqRunner.Trigger()
		}
		if name == self {
			nodeRunner.Trigger()
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if n, ok := obj.(*v1.Node); ok {
				trigger(n.Name)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*v1.Node)
			n, ok2 := newObj.(*v1.Node)
			if !ok1 || !ok2 {
				return
			}
			if n.Name == self && !reflect.DeepEqual(networkCondition(o), networkCondition(n)) {
				nodeRunner.Trigger()
			}
			if relevantChange(o, n) {
				trigger(n.Name)
			}
		},
		DeleteFunc: func(obj any) {
			switch n := obj.(type) {
			case *v1.Node:
				trigger(n.Name)
			case cache.DeletedFinalStateUnknown:
				trigger(n.Key)
			}
		},
	}
}

func relevantChange(o, n *v1.Node) bool {
	return !reflect.DeepEqual(o.Spec.PodCIDRs, n.Spec.PodCIDRs) || o.Spec.PodCIDR != n.Spec.PodCIDR ||
		!reflect.DeepEqual(o.Status.Addresses, n.Status.Addresses) ||
		!reflect.DeepEqual(o.Annotations, n.Annotations)
}

func networkCondition(n *v1.Node) *v1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == v1.NodeNetworkUnavailable {
			c := n.Status.Conditions[i]
			c.LastHeartbeatTime = metav1.Time{}
			return &c
		}
	}
	return nil
}

// firstSyncsPoll is how often releaseAfterFirstSyncs looks.
const firstSyncsPoll = 100 * time.Millisecond

// releaseAfterFirstSyncs returns the heap's free pages to the operating
// system once, when every runner has synced successfully once (or ctx
// ends). The initial lists decode every object in full and drop it at
// once, and the first syncs compute everything from scratch: their
// garbage leaves the heap's pages partly free, which the runtime's
// scavenger otherwise returns only slowly (docs/scale.md, Memory).
func releaseAfterFirstSyncs(ctx context.Context, runners []*syncrunner.Runner, poll time.Duration) bool {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		done := true
		for _, r := range runners {
			done = done && !r.LastSuccess().IsZero()
		}
		if done {
			debug.FreeOSMemory()
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}
