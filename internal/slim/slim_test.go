package slim

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func apiPod(name, node string, labels map[string]string) *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	del := metav1.NewTime(time.Unix(200, 5))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: "u-" + "1", ResourceVersion: "42", Labels: labels,
			CreationTimestamp: metav1.NewTime(time.Unix(100, 7)), DeletionTimestamp: &del,
			Annotations:   map[string]string{MirrorAnnotation: "config-uid", "big": "dropped"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: false,
			Containers: []corev1.Container{{Name: "c", Image: "img", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}, {ContainerPort: 81}}}},
			InitContainers: []corev1.Container{
				{Name: "init", Ports: []corev1.ContainerPort{{Name: "once", ContainerPort: 1}}},
				{Name: "proxy", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 9090, Protocol: corev1.ProtocolUDP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1",
			PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}, {IP: "bogus"}}},
	}
}

// PodOf keeps what the readers need, exactly, and nothing else.
func TestPodOfKeepsWhatReadersNeed(t *testing.T) {
	p := PodOf(apiPod("a", "n1", map[string]string{"app": "web"}), nil)
	want := &Pod{
		Meta: Meta{Namespace: "ns", Name: "a", UID: "u-1", ResourceVersion: "42", Labels: map[string]string{"app": "web"},
			Created: time.Unix(100, 7).UnixNano(), Deleted: time.Unix(200, 5).UnixNano()},
		NodeName: "n1", Phase: corev1.PodRunning,
		IPs:       []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		Ports:     []Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}, {Name: "proxy", Protocol: corev1.ProtocolUDP, Port: 9090}},
		MirrorUID: "config-uid",
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("PodOf\n got %+v\nwant %+v", p, want)
	}
	// Only status.podIP: it is the address.
	only := apiPod("b", "n1", nil)
	only.Status.PodIPs = nil
	if got := PodOf(only, nil).IPs; !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("10.0.0.1")}) {
		t.Errorf("IPs from podIP alone: %v", got)
	}
	if got := PodOf(&corev1.Pod{}, nil); got.IPs != nil || got.Ports != nil || got.Labels != nil || got.Deleted != 0 || got.Created != 0 {
		t.Errorf("empty pod converts to %+v", got)
	}
}

// Slim pods are keyed, accessed and copied like API objects by the
// informer machinery.
func TestPodIsAnAPIObject(t *testing.T) {
	p := PodOf(apiPod("a", "n1", map[string]string{"app": "web"}), nil)
	if key, err := cache.MetaNamespaceKeyFunc(p); err != nil || key != "ns/a" {
		t.Fatalf("key %q, %v", key, err)
	}
	m, err := meta.Accessor(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.GetResourceVersion() != "42" || m.GetUID() != "u-1" || m.GetLabels()["app"] != "web" {
		t.Errorf("accessor reads %q %q %v", m.GetResourceVersion(), m.GetUID(), m.GetLabels())
	}
	if ts := m.GetCreationTimestamp(); !ts.Equal(&metav1.Time{Time: time.Unix(100, 7)}) {
		t.Errorf("creation timestamp %v", ts)
	}
	if ts := m.GetDeletionTimestamp(); ts == nil || !ts.Equal(&metav1.Time{Time: time.Unix(200, 5)}) {
		t.Errorf("deletion timestamp %v", ts)
	}
	m.SetDeletionTimestamp(nil)
	if p.Deleted != 0 || m.GetDeletionTimestamp() != nil {
		t.Error("SetDeletionTimestamp(nil) did not clear it")
	}
	cp := p.DeepCopyObject().(*Pod)
	if !reflect.DeepEqual(cp, p) || &cp.IPs[0] == &p.IPs[0] {
		t.Error("DeepCopyObject is not an equal, separate copy")
	}
}

// Equal strings, label sets and port lists are held once; the interner
// forgets what it holds once it has doubled, and pods converted after
// that share among themselves again.
func TestInternerSharesAndForgets(t *testing.T) {
	in := NewInterner()
	a := PodOf(apiPod("a", "node-7", map[string]string{"app": "web", "hash": "x"}), in)
	b := PodOf(apiPod("b", string([]byte("node-7")), map[string]string{"hash": "x", "app": "web"}), in)
	c := PodOf(apiPod("c", "node-7", map[string]string{"app": "web", "hash": "y"}), in)
	if reflect.ValueOf(a.Labels).UnsafePointer() != reflect.ValueOf(b.Labels).UnsafePointer() {
		t.Error("equal label sets are not shared")
	}
	if reflect.ValueOf(a.Labels).UnsafePointer() == reflect.ValueOf(c.Labels).UnsafePointer() || c.Labels["hash"] != "y" {
		t.Error("different label sets are shared")
	}
	if unsafe.StringData(a.NodeName) != unsafe.StringData(b.NodeName) || &a.Ports[0] != &b.Ports[0] {
		t.Error("node name or ports not shared")
	}
	// Ambiguity: {"a": "b=c"} and {"a=b": "c"} differ.
	if x, y := in.Labels(map[string]string{"a": "b:c"}), in.Labels(map[string]string{"a:b": "c"}); len(x) != 1 || x["a"] != "b:c" || y["a:b"] != "c" {
		t.Errorf("label sets confused: %v %v", x, y)
	}
	for i := 0; i < 3*minEntries; i++ {
		in.String(fmt.Sprint(i))
	}
	if n := len(in.strs) + len(in.sets) + len(in.ports); n > 2*minEntries {
		t.Errorf("interner holds %d entries after %d distinct strings; it never forgets", n, 3*minEntries)
	}
	d := PodOf(apiPod("d", "node-7", map[string]string{"app": "web", "hash": "x"}), in)
	e := PodOf(apiPod("e", "node-7", map[string]string{"app": "web", "hash": "x"}), in)
	if !reflect.DeepEqual(d.Labels, a.Labels) || reflect.ValueOf(d.Labels).UnsafePointer() != reflect.ValueOf(e.Labels).UnsafePointer() {
		t.Error("after a reset, pods do not share among themselves")
	}
	var nilIn *Interner
	if l := map[string]string{"a": "b"}; reflect.ValueOf(nilIn.Labels(l)).UnsafePointer() != reflect.ValueOf(l).UnsafePointer() || nilIn.String("s") != "s" {
		t.Error("a nil interner does not pass values through")
	}
}
