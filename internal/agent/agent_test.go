package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/syncrunner"
)

func TestTrimForCacheKeepsWhatControllersRead(t *testing.T) {
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{"trellis.dev/vtep-mac": "x"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: v1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24"}},
		Status: v1.NodeStatus{
			Addresses:  []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}},
			Conditions: []v1.NodeCondition{{Type: v1.NodeNetworkUnavailable, Status: v1.ConditionFalse}},
			Images:     []v1.ContainerImage{{Names: []string{"big"}, SizeBytes: 1}},
		},
	}
	out, err := trimForCache(n)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*v1.Node)
	if got.ManagedFields != nil || got.Status.Images != nil {
		t.Errorf("not trimmed: managedFields %v images %v", got.ManagedFields, got.Status.Images)
	}
	if got.Annotations["trellis.dev/vtep-mac"] != "x" || len(got.Spec.PodCIDRs) != 1 || len(got.Status.Addresses) != 1 || len(got.Status.Conditions) != 1 {
		t.Errorf("trimmed too much: %+v", got)
	}
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "b"}, ManagedFields: []metav1.ManagedFieldsEntry{{}}}}
	if _, err := trimForCache(p); err != nil || p.ManagedFields != nil || p.Labels["a"] != "b" {
		t.Errorf("pod: err %v managedFields %v labels %v", err, p.ManagedFields, p.Labels)
	}
	// Tombstones pass through untouched.
	tomb := cache.DeletedFinalStateUnknown{Key: "n", Obj: n}
	if _, err := trimForCache(tomb); err != nil {
		t.Errorf("tombstone: %v", err)
	}
}

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
