//go:build kernel

package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/internal/wireguard/strict"
)

// With encryption's strict mode, the agent writes no dataplane marker (so
// the plugin wires no pod) while the strict table cannot be programmed,
// although the policy table is in place, and marks the Node
// NetworkUnavailable; once the strict controller syncs, the marker
// appears and names the strict table beside the policy table.
func TestKernelAgentMarkerWaitsForStrictTable(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	dp := &netlinkprog.Programmer{Handle: n.Handle, NetnsPath: n.NS.Path()}
	dir := t.TempDir()
	cfg := &config.Config{NodeName: "node1", RoutingMode: config.ModeNative, CNIPluginSource: "/proc/self/exe",
		CNIBinDir: dir + "/bin", CNIConfDir: dir + "/net.d", NodeStateFile: dir + "/node-state.json",
		Encryption: config.EncryptionWireGuard, WireGuard: config.WireGuard{KeyFile: dir + "/wireguard.key"}}
	cfg.ApplyDefaults()
	cfg.MinSyncInterval.Duration = 50 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !cfg.EncryptionStrictEnabled() {
		t.Fatal("strict mode is not on by default with encryption on")
	}
	client := fake.NewClientset(node("node1", "10.0.1.11", "10.244.1.0/24"), node("node2", "10.0.1.12", "10.244.2.0/24"))
	strictNFT := &flakyNFT{Interface: knftables.NewFake(knftables.InetFamily, strict.TableName)}
	strictNFT.fail.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, deps{api: fakeAPI(t, client), routes: dp, sysctls: memSysctls{},
			policyNFT: knftables.NewFake(knftables.InetFamily, policy.TableName), strict: strictKernel{nft: strictNFT}})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent returned %v", err)
		}
	}()
	marker := func() *podlink.Dataplane {
		st, err := podlink.ReadNodeState(cfg.NodeStateFile)
		if err != nil {
			return nil
		}
		return st.Dataplane
	}
	networkUnavailable := func() (v1.ConditionStatus, string) {
		self, err := client.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
		if err != nil {
			return "", ""
		}
		for _, c := range self.Status.Conditions {
			if c.Type == v1.NodeNetworkUnavailable {
				return c.Status, c.Message
			}
		}
		return "", ""
	}
	eventually(t, 10*time.Second, "strict table failing: NetworkUnavailable=True naming the strict controller", func() bool {
		st, msg := networkUnavailable()
		return st == v1.ConditionTrue && strings.Contains(msg, "strict encryption controller")
	})
	time.Sleep(500 * time.Millisecond) // the policy controller has synced long since
	if m := marker(); m != nil {
		t.Fatalf("dataplane marker %+v written while the strict table cannot be programmed", m)
	}

	strictNFT.fail.Store(false)
	took := eventually(t, 40*time.Second, "strict controller recovered: marker naming the strict table", func() bool {
		m := marker()
		return m != nil && slices.Contains(m.Tables, podlink.NFTable{Family: "inet", Name: strict.TableName}) &&
			slices.Contains(m.Tables, podlink.NFTable{Family: "inet", Name: policy.TableName})
	})
	t.Logf("marker written %v after the strict table could be programmed", took)
}
