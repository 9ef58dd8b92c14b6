//go:build e2e

package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestE2EPolicyAgentKill9: with policies enforced, every agent is killed
// (-9) and restarted while the truth table is probed continuously. Not a
// single probe may differ from the oracle at any moment: the kernel keeps
// the last committed table, and a restarted agent reconciles it without
// flushing (no window that allows or drops).
func TestE2EPolicyAgentKill9(t *testing.T) {
	requireAgent(t)
	m := newModel(t)
	t.Cleanup(func() { m.removeAll(t) })
	m.create(t, "x", "from-y-80", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "y")}},
			Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80), nil)}}}})
	m.create(t, "z", "deny-egress", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "b"), PolicyTypes: egressOnly})
	m.expect(t, converge)
	exp := m.expected(t)
	var cells []cell
	for _, pr := range m.tables() {
		if (pr.port != 80 || pr.proto != corev1.ProtocolTCP) && (pr.port != 81 || pr.proto != corev1.ProtocolUDP) {
			continue // 80/tcp and 81/udp, over every family
		}
		for _, a := range m.pods {
			for _, b := range m.pods {
				if a != b {
					cells = append(cells, cell{a, b, pr})
				}
			}
		}
	}
	killed := make(chan error, 1)
	go func() {
		time.Sleep(time.Second)
		for _, n := range l.Nodes() {
			if out, err := l.KillAgentCmd(n).CombinedOutput(); err != nil {
				killed <- fmt.Errorf("restart-agent %s: %v: %s", n, err, out)
				return
			}
		}
		killed <- nil
	}()
	var wrong []string
	rounds := 0
	for start := time.Now(); time.Since(start) < 12*time.Second; rounds++ {
		obs, err := m.probeCells(cells)
		if err != nil {
			t.Fatal(err)
		}
		for c, ok := range obs {
			if ok != exp[c.pr].Cells[c.from][c.to] {
				wrong = append(wrong, fmt.Sprintf("round %d at %s: %s -> %s %s observed %v, expected %v",
					rounds, time.Since(start).Round(time.Millisecond), c.from, c.to, c.pr, ok, !ok))
			}
		}
	}
	if err := <-killed; err != nil {
		t.Fatal(err)
	}
	if len(wrong) > 0 {
		t.Fatalf("%d probes differed from the oracle across the agent kills:\n%s", len(wrong), strings.Join(wrong, "\n"))
	}
	t.Logf("%d rounds × %d probes across kill -9 of every agent: all as expected", rounds, len(cells))
	m.expect(t, converge) // and the restarted agents still enforce
}
