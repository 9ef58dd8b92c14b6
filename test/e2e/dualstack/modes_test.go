//go:build e2e && dualstack

package dualstack

import (
	"testing"
	"time"
)

// The tests whose expectations depend on the routing mode (which pods and
// nodes connect, where the Service backend sits, which paths carry
// full-size datagrams) run again in each mode other than the lab's: the
// agents are reconfigured (the ConfigMap's routingMode, every agent pod
// replaced) and the tests expect that mode. The lab's mode is restored at
// the end.
func TestE2EDualStackRoutingModes(t *testing.T) {
	requireAgent(t)
	labMode := lab.State.Topology.Options.RoutingMode
	t.Cleanup(func() {
		agentMode = ""
		lab.SetAgentConfig(t, labMode, "")
	})
	for _, m := range []string{"native", "vxlan", "auto"} {
		if m == labMode {
			continue
		}
		t.Run(m, func(t *testing.T) {
			start := time.Now()
			lab.SetAgentConfig(t, m, "")
			agentMode = m
			t.Logf("agents in routing mode %s after %v", m, time.Since(start).Round(time.Millisecond))
			t.Run("PodTruthTables", TestE2EDualStackPodTruthTables)
			t.Run("NodeAndPod", TestE2EDualStackNodeAndPod)
			t.Run("Services", TestE2EDualStackServices)
			t.Run("LargeUDPNoFragmentation", TestE2EDualStackLargeUDPNoFragmentation)
			t.Logf("routing mode %s: %v", m, time.Since(start).Round(time.Millisecond))
		})
	}
}
