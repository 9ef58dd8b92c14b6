package syncrunner

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEventHandlerIgnoresResyncs(t *testing.T) {
	n := 0
	h := EventHandler(func() { n++ })
	pod := func(rv string) *v1.Pod { return &v1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}} }
	h.OnAdd(pod("1"), false)
	h.OnUpdate(pod("1"), pod("1")) // resync
	if n != 1 {
		t.Fatalf("after add and resync: %d calls, want 1", n)
	}
	h.OnUpdate(pod("1"), pod("2"))
	h.OnUpdate(pod(""), pod("")) // no version: treat as a change
	h.OnDelete(pod("2"))
	if n != 4 {
		t.Fatalf("after update, unversioned update, delete: %d calls, want 4", n)
	}
}
