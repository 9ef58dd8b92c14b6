package policy

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/slim"
)

func TestDedupeByIPKeepsTheLivePod(t *testing.T) {
	at := func(s int) metav1.Time { return metav1.NewTime(time.Unix(int64(s), 0)) }
	mk := func(name, ip string, created int, deleting bool, phase corev1.PodPhase) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, CreationTimestamp: at(created)},
			Status: corev1.PodStatus{PodIP: ip, Phase: phase}}
		if deleting {
			del := at(created + 1)
			p.DeletionTimestamp = &del
		}
		return p
	}
	old := mk("old", "10.0.0.5", 100, true, corev1.PodRunning)
	fresh := mk("new", "10.0.0.5", 50, false, corev1.PodRunning) // clock skew: still wins, not deleting
	older := mk("older", "10.0.0.6", 10, false, corev1.PodRunning)
	newest := mk("newest", "10.0.0.6", 20, false, corev1.PodRunning)
	done := mk("done", "10.0.0.7", 30, false, corev1.PodSucceeded)
	other := mk("other", "10.0.0.8", 30, false, corev1.PodRunning)
	var pods []*slim.Pod
	for _, p := range []*corev1.Pod{old, fresh, older, newest, done, other} {
		pods = append(pods, slim.PodOf(p, nil))
	}
	got := dedupeByIP(pods)
	names := map[string]bool{}
	for _, p := range got {
		names[p.Name] = true
	}
	want := map[string]bool{"new": true, "newest": true, "other": true}
	if len(names) != len(want) {
		t.Fatalf("kept %v, want %v", names, want)
	}
	for n := range want {
		if !names[n] {
			t.Fatalf("kept %v, want %v", names, want)
		}
	}
}

// TestDedupeByIPContestsEveryFamily: a dual-stack pod whose IPv6 address
// went to a newer pod (its IPv4 one not reused) loses its place, so its
// labels grant nothing to the new pod's IPv6 address; the new pod keeps
// both of its addresses.
func TestDedupeByIPContestsEveryFamily(t *testing.T) {
	mk := func(name string, created int64, deleting bool, ips ...string) *slim.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name,
			CreationTimestamp: metav1.NewTime(time.Unix(created, 0)), Labels: map[string]string{"app": name}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		p.Status.PodIP = ips[0]
		if deleting {
			del := metav1.NewTime(time.Unix(created+1, 0))
			p.DeletionTimestamp = &del
		}
		return slim.PodOf(p, nil)
	}
	for _, tc := range []struct {
		name string
		pods []*slim.Pod
		want []string
	}{
		{"secondary address reused", []*slim.Pod{
			mk("stale", 10, true, "10.0.0.5", "fd00::5"),
			mk("fresh", 20, false, "10.0.0.9", "fd00::5"),
		}, []string{"fresh"}},
		{"primary address reused", []*slim.Pod{
			mk("fresh", 20, false, "10.0.0.5", "fd00::9"),
			mk("stale", 10, false, "10.0.0.5", "fd00::5"),
		}, []string{"fresh"}},
		{"IPv6-primary pod against a dual one", []*slim.Pod{
			mk("stale", 10, true, "fd00::5", "10.0.0.5"),
			mk("fresh", 20, false, "10.0.0.9", "fd00::5"),
			mk("other", 5, false, "10.0.0.7", "fd00::7"),
		}, []string{"fresh", "other"}},
		{"one address listed twice", []*slim.Pod{
			mk("twice", 10, false, "10.0.0.5", "10.0.0.5"),
		}, []string{"twice"}},
	} {
		var got []string
		for _, p := range dedupeByIP(tc.pods) {
			got = append(got, p.Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: kept %v, want %v", tc.name, got, tc.want)
		}
	}

}

func TestCompileNeverEmitsConflictingInterfaceKeys(t *testing.T) {
	snap := &Snapshot{NodeName: "n1", Pods: []Pod{
		{Namespace: "x", Name: "a", IPs: mustAddrs("10.0.0.1"), NodeName: "n1", Interface: "trl00000000001"},
		{Namespace: "x", Name: "b", IPs: mustAddrs("10.0.0.2"), NodeName: "n1", Interface: "trl00000000001"},
	}}
	d := Compile(snap)
	if n := len(d.Sets[SetPodIfaces].Elements); n != 1 {
		t.Fatalf("pod-ifaces has %d elements for one interface: %v", n, d.Sets[SetPodIfaces].Elements)
	}
}

func mustAddrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}
