package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// The fast path's runner syncs when this node's trellis.dev/fast-path
// annotation turns it off or on, and not for other changes or other nodes;
// the annotation survives the informer's trimming.
func TestFastPathOffAnnotationTriggersASync(t *testing.T) {
	var syncs atomic.Int32
	r := syncrunner.New("fastpath", func(context.Context) error { syncs.Add(1); return nil },
		syncrunner.Options{MinInterval: time.Millisecond, MaxInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	waitSyncs := func(want int32) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for syncs.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // and no more than want
		if got := syncs.Load(); got != want {
			t.Fatalf("%d syncs, want %d", got, want)
		}
	}
	waitSyncs(1) // the first, at start
	node := func(name string, ann map[string]string) *v1.Node {
		n, err := trimForCache(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}})
		if err != nil {
			t.Fatal(err)
		}
		return n.(*v1.Node)
	}
	on := node("n1", nil)
	off := node("n1", map[string]string{fastpath.AnnotationOff: "off"})
	if !fastpath.OffByAnnotation(off.Annotations) {
		t.Fatal("the off annotation does not survive trimming")
	}
	h := fastPathOffHandler("n1", r)
	h.OnUpdate(on, node("n1", map[string]string{"trellis.dev/node-ip": "10.0.0.1"}))
	h.OnUpdate(node("n2", nil), node("n2", map[string]string{fastpath.AnnotationOff: "off"}))
	waitSyncs(1)
	h.OnUpdate(on, off)
	waitSyncs(2)
	h.OnUpdate(off, on)
	waitSyncs(3)
}
