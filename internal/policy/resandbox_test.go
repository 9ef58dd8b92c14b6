package policy

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellisnet/trellis/internal/podlink"
)

// The kubelet re-creates a pod's sandbox (same pod, same UID) while the API
// server is away: the plugin gives the new sandbox a new address, but the
// pod's status still reports the old one. The interface naming this pod
// incarnation is the truth: the pod is programmed with the new address and
// its interface, so allowed traffic reaches it and its policy applies.
func TestSnapshotRecreatedSandboxTakesKernelAddress(t *testing.T) {
	p := apiPod("x", "a", "u1", "10.244.1.5") // status from before the re-creation
	got := pairing(t, []*corev1.Pod{p}, []podlink.Interface{iface("trlnew0", "10.244.1.9", named("x", "a", "u1"))})
	a := got["x/a"]
	if a.Interface != "trlnew0" || len(a.IPs) != 1 || a.IPs[0] != netip.MustParseAddr("10.244.1.9") {
		t.Fatalf("x/a = %+v, want trlnew0 with 10.244.1.9 (the re-created sandbox's address)", a)
	}
	if p.Status.PodIP != "10.244.1.5" || p.Status.PodIPs[0].IP != "10.244.1.5" {
		t.Fatal("the lister's object was modified")
	}
}

// The kernel's address replaces the status's only for an interface that
// names this very incarnation (its UID) and is the pod's only one.
func TestSnapshotStatusAddressKeptUnlessAliasProvesIncarnation(t *testing.T) {
	cases := map[string][]podlink.Interface{
		"alias without UID": {iface("trlnew0", "10.244.1.9", named("x", "a", ""))},
		"other incarnation": {iface("trlnew0", "10.244.1.9", named("x", "a", "u0"))},
		"two interfaces": {iface("trlnew0", "10.244.1.9", named("x", "a", "u1")),
			iface("trlnew1", "10.244.1.10", named("x", "a", "u1"))},
	}
	for name, ifaces := range cases {
		got := pairing(t, []*corev1.Pod{apiPod("x", "a", "u1", "10.244.1.5")}, ifaces)
		a := got["x/a"]
		if len(a.IPs) != 1 || a.IPs[0] != netip.MustParseAddr("10.244.1.5") || a.Interface != "" {
			t.Errorf("%s: x/a = %+v, want the status address 10.244.1.5 and no interface", name, a)
		}
	}
	// Status and kernel agree: nothing to replace, the pod is paired as always.
	got := pairing(t, []*corev1.Pod{apiPod("x", "a", "u1", "10.244.1.5")},
		[]podlink.Interface{iface("trlaaaa", "10.244.1.5", named("x", "a", "u1"))})
	if a := got["x/a"]; a.Interface != "trlaaaa" {
		t.Fatalf("x/a = %+v, want trlaaaa", a)
	}
}
