package policy

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/slim"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

func apiPod(ns, name, uid, ip string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	return p
}

func iface(name, ip string, al podlink.Alias) podlink.Interface {
	return podlink.Interface{Index: len(name), Name: name, Addrs: []netip.Addr{netip.MustParseAddr(ip)}, Alias: al}
}

func named(ns, name, uid string) podlink.Alias {
	return podlink.Alias{Network: "trellis", ContainerID: "c-" + name, IfName: "eth0", PodNamespace: ns, PodName: name, PodUID: uid}
}

func pairing(t *testing.T, pods []*corev1.Pod, ifaces []podlink.Interface) map[string]Pod {
	t.Helper()
	snap := SnapshotFromAPI("n1", pods, nil, nil, ifaces)
	out := map[string]Pod{}
	for _, p := range snap.Pods {
		out[p.Namespace+"/"+p.Name] = p
	}
	return out
}

// A pod whose status has no address yet is programmed from the interface
// naming it: its address comes from the kernel, not the API round trip.
func TestSnapshotPairsNewPodThroughAlias(t *testing.T) {
	p := apiPod("x", "a", "u1", "")
	got := pairing(t, []*corev1.Pod{p}, []podlink.Interface{iface("trlaaaa", "10.244.1.5", named("x", "a", "u1"))})
	a := got["x/a"]
	if a.Interface != "trlaaaa" || len(a.IPs) != 1 || a.IPs[0] != netip.MustParseAddr("10.244.1.5") {
		t.Fatalf("x/a = %+v, want trlaaaa with 10.244.1.5", a)
	}
	if p.Status.PodIP != "" {
		t.Fatal("the lister's object was modified")
	}
}

// The alias decides, not the API's (possibly stale) view of the address.
func TestSnapshotAliasBeatsStaleAddress(t *testing.T) {
	stale := apiPod("y", "old", "u0", "10.244.1.5") // deleted pod whose object outlives its sandbox
	stale.DeletionTimestamp = &metav1.Time{}
	fresh := apiPod("x", "a", "u1", "")
	got := pairing(t, []*corev1.Pod{stale, fresh}, []podlink.Interface{iface("trlaaaa", "10.244.1.5", named("x", "a", "u1"))})
	if got["x/a"].Interface != "trlaaaa" {
		t.Fatalf("new pod not paired: %+v", got["x/a"])
	}
	if o, ok := got["y/old"]; ok && o.Interface != "" {
		t.Fatalf("stale pod paired with the new pod's interface: %+v", o)
	}
	// Even with an address the stale pod still holds alone.
	got = pairing(t, []*corev1.Pod{apiPod("y", "old", "u0", "10.244.1.5")}, []podlink.Interface{iface("trlaaaa", "10.244.1.5", named("x", "a", "u1"))})
	if got["y/old"].Interface != "" {
		t.Fatalf("interface naming x/a paired with y/old: %+v", got["y/old"])
	}
}

// Interfaces without a pod in their alias (older plugins) pair by address.
func TestSnapshotOldAliasPairsByAddress(t *testing.T) {
	old := podlink.Alias{Network: "trellis", ContainerID: "c", IfName: "eth0"}
	got := pairing(t, []*corev1.Pod{apiPod("x", "a", "u1", "10.244.1.5"), apiPod("x", "b", "u2", "")},
		[]podlink.Interface{iface("trlaaaa", "10.244.1.5", old), iface("trlbbbb", "10.244.1.6", old)})
	if got["x/a"].Interface != "trlaaaa" {
		t.Fatalf("x/a = %+v", got["x/a"])
	}
	if b := got["x/b"]; b.Interface != "" || len(b.IPs) != 0 {
		t.Fatalf("x/b has no status address and no alias naming it, yet %+v", b)
	}
}

// Another incarnation of the same pod name (UID differs) never lends its
// address; the mirror pod of a static pod is known by its config UID.
func TestSnapshotPodUID(t *testing.T) {
	got := pairing(t, []*corev1.Pod{apiPod("x", "a", "u2", "")}, []podlink.Interface{iface("trlaaaa", "10.244.1.5", named("x", "a", "u1"))})
	if a := got["x/a"]; a.Interface != "" || len(a.IPs) != 0 {
		t.Fatalf("new incarnation took the old one's interface: %+v", a)
	}
	mirror := apiPod("kube-system", "static", "api-uid", "")
	mirror.Annotations = map[string]string{slim.MirrorAnnotation: "config-uid"}
	got = pairing(t, []*corev1.Pod{mirror}, []podlink.Interface{iface("trlssss", "10.244.1.7", named("kube-system", "static", "config-uid"))})
	if got["kube-system/static"].Interface != "trlssss" {
		t.Fatalf("mirror pod not paired: %+v", got["kube-system/static"])
	}
	// Two interfaces naming one pod with no address in its status: ambiguous, wait for the status.
	got = pairing(t, []*corev1.Pod{apiPod("x", "a", "", "")}, []podlink.Interface{
		iface("trlaaaa", "10.244.1.5", named("x", "a", "")), iface("trlbbbb", "10.244.1.6", named("x", "a", ""))})
	if a := got["x/a"]; a.Interface != "" {
		t.Fatalf("ambiguous interfaces paired: %+v", a)
	}
	// Pods of other nodes are never paired.
	remote := apiPod("x", "r", "u3", "")
	remote.Spec.NodeName = "n2"
	got = pairing(t, []*corev1.Pod{remote}, []podlink.Interface{iface("trlrrrr", "10.244.1.8", named("x", "r", "u3"))})
	if r := got["x/r"]; r.Interface != "" || len(r.IPs) != 0 {
		t.Fatalf("remote pod paired with a local interface: %+v", r)
	}
}

// Only changes of the interfaces that carry a pod address ask for a sync:
// the steps of an ADD before its host route do not.
func TestInterfacesChangedTriggersOnAddressedInterfaces(t *testing.T) {
	c := &Controller{Runner: syncrunner.New("policy", func(context.Context) error { return nil }, syncrunner.Options{})}
	asked := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		got := !c.pendingSince.IsZero()
		c.pendingSince = time.Time{}
		return got
	}
	a := iface("trlaaaa", "10.244.1.5", named("x", "a", "u1"))
	bare := podlink.Interface{Index: 9, Name: "trlbbbb"}
	for i, step := range []struct {
		ifaces []podlink.Interface
		want   bool
	}{
		{nil, true}, // the first list always syncs
		{[]podlink.Interface{bare}, false},
		{[]podlink.Interface{bare, a}, true},
		{[]podlink.Interface{a, {Index: 9, Name: "trlbbbb", Group: 7}}, false},
		{[]podlink.Interface{a}, false},
		{nil, true},
	} {
		c.InterfacesChanged(step.ifaces)
		if got := asked(); got != step.want {
			t.Errorf("step %d: sync asked %v, want %v", i, got, step.want)
		}
	}
}

// Dual-stack and IPv6-only pods: a new pod takes both addresses of the
// interface naming it; an old interface without a pod in its alias pairs
// with a pod by its IPv6 address too.
func TestSnapshotPairsBothFamilies(t *testing.T) {
	dual := podlink.Interface{Index: 1, Name: "trldual", Alias: named("x", "d", "u1"),
		Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("fd00:244:1::5")}}
	six := iface("trlsix", "fd00:244:1::6", podlink.Alias{})
	got := pairing(t, []*corev1.Pod{apiPod("x", "d", "u1", ""), apiPod("x", "s", "u2", "fd00:244:1::6")}, []podlink.Interface{dual, six})
	if d := got["x/d"]; d.Interface != "trldual" || len(d.IPs) != 2 || d.IPs[1] != netip.MustParseAddr("fd00:244:1::5") {
		t.Errorf("x/d = %+v, want trldual with both addresses", d)
	}
	if s := got["x/s"]; s.Interface != "trlsix" {
		t.Errorf("x/s = %+v, want trlsix (paired by its IPv6 address)", s)
	}
}
