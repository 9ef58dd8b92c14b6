//go:build e2e

package agent

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellisnet/trellis/internal/routing"
)

// A Node that joins later and publishes an existing node's VTEP MAC (what
// a compromised node would do to take over that node's overlay traffic)
// is rejected by every agent: a Warning Event from each, no route to its
// pod CIDR, and the victim's MAC still leads only to the victim.
func TestE2EAgentRejectsNodeClaimingAnotherNodesVTEPMAC(t *testing.T) {
	requireAgent(t)
	ctx := context.Background()
	nodes := l.Nodes()
	victim := nodes[1]
	kv, err := l.CS.CoreV1().Nodes().Get(ctx, victim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mac := kv.Annotations[routing.AnnotationVTEPMAC]
	if mac == "" {
		mac = routing.VTEPMAC(victim)
	}
	const name = "e2e-evil"
	cidr := netip.MustParsePrefix("10.244.230.0/24")
	base := l.NodeHost(t, nodes[0]).Addr.As4()
	addr := netip.AddrFrom4([4]byte{base[0], base[1], base[2], 230})
	evil := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{routing.AnnotationVTEPMAC: mac}},
		Spec:       corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}},
	}
	since := time.Now().Add(-time.Second)
	if _, err := l.CS.CoreV1().Nodes().Create(ctx, evil, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.CS.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q}]}}`, addr)
	if _, err := l.CS.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}

	reported := map[string]bool{}
	eventually(t, 10*time.Second, "a "+routing.ReasonConflict+" Warning Event from every agent", func() bool {
		evs, err := l.CS.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "reason=" + routing.ReasonConflict})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, name) && strings.Contains(e.Message, victim) &&
				!e.LastTimestamp.Time.Before(since) {
				reported[e.Source.Host] = true
			}
		}
		return len(reported) >= len(nodes)
	})
	time.Sleep(time.Second) // a sync that would program it has run by now
	for _, n := range nodes {
		dp := nodeDataplane(t, n)
		if hasRoute(t, dp, cidr) {
			t.Errorf("node %s: route to %s (%s, rejected) installed", n, name, cidr)
		}
		vx, err := dp.Handle.LinkByName("trellis.vxlan")
		if err != nil {
			continue // native mode: no overlay
		}
		fdb, err := dp.ListFDB(vx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range fdb {
			if e.HardwareAddr.String() == mac && e.IP != nil && e.IP.String() != l.NodeHost(t, victim).Addr.String() {
				t.Errorf("node %s: FDB sends %s's MAC %s to %s", n, victim, mac, e.IP)
			}
		}
	}
	t.Logf("mode %s: %s (MAC of %s) rejected and reported by %v", mode(), name, victim, reported)
}
