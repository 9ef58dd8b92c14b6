//go:build kernel

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

// flakyNFT fails every transaction while fail is set.
type flakyNFT struct {
	knftables.Interface
	fail atomic.Bool
}

func (f *flakyNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.fail.Load() {
		return errors.New("injected nftables failure")
	}
	return f.Interface.Run(ctx, tx)
}

// A failing policy controller keeps the node not ready everywhere: the
// node state file (ready false, no dataplane marker, so the plugin's gate
// stays closed), /readyz (503 naming the policy controller) and the Node
// (NetworkUnavailable=True); once it syncs, all three turn ready.
func TestKernelAgentReadinessFollowsPolicyController(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	dp := &netlinkprog.Programmer{Handle: n.Handle, NetnsPath: n.NS.Path()}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := &config.Config{NodeName: "node1", RoutingMode: config.ModeNative, CNIPluginSource: "/proc/self/exe",
		CNIBinDir: dir + "/bin", CNIConfDir: dir + "/net.d", NodeStateFile: dir + "/node-state.json",
		MetricsBindAddress: addr}
	cfg.ApplyDefaults()
	cfg.MinSyncInterval.Duration = 50 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !cfg.NetworkPolicyEnabled() {
		t.Fatal("NetworkPolicy enforcement is off by default; this test needs it on")
	}
	client := fake.NewClientset(node("node1", "10.0.1.11", "10.244.1.0/24"), node("node2", "10.0.1.12", "10.244.2.0/24"))
	nft := &flakyNFT{Interface: knftables.NewFake(knftables.InetFamily, policy.TableName)}
	nft.fail.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, deps{api: fakeAPI(t, client), routes: dp, sysctls: memSysctls{}, policyNFT: nft})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent returned %v", err)
		}
	}()

	// state returns the node state file's ready, whether it has a
	// dataplane marker, and its reason (read as JSON: the contract).
	state := func() (ready, marker bool, reason string) {
		data, err := os.ReadFile(cfg.NodeStateFile)
		if err != nil {
			return false, false, ""
		}
		var s map[string]any
		if json.Unmarshal(data, &s) != nil {
			return false, false, ""
		}
		r, _ := s["reason"].(string)
		return s["ready"] == true, s["dataplane"] != nil, r
	}
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	networkUnavailable := func() v1.ConditionStatus {
		self, err := client.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
		if err != nil {
			return ""
		}
		for _, c := range self.Status.Conditions {
			if c.Type == v1.NodeNetworkUnavailable {
				return c.Status
			}
		}
		return ""
	}

	eventually(t, 10*time.Second, "routes programmed while the policy controller fails", func() bool {
		return routeTo(t, dp, "10.244.2.0/24") == "10.0.1.12 ul0"
	})
	eventually(t, 10*time.Second, "failing policy controller: state file not ready without a marker, /readyz failing, NetworkUnavailable=True", func() bool {
		ready, marker, reason := state()
		code, body := readyz()
		return reason != "" && !ready && !marker && strings.Contains(reason, "policy") &&
			code == http.StatusServiceUnavailable && strings.Contains(body, "policy") &&
			networkUnavailable() == v1.ConditionTrue
	})
	// Not ready stays not ready while the failure lasts.
	time.Sleep(time.Second)
	if ready, marker, _ := state(); ready || marker {
		t.Fatalf("state turned ready (%v) or marked (%v) while the policy controller fails", ready, marker)
	}

	nft.fail.Store(false)
	took := eventually(t, 40*time.Second, "policy controller recovered: ready everywhere", func() bool {
		ready, marker, _ := state()
		code, _ := readyz()
		return ready && marker && code == http.StatusOK && networkUnavailable() == v1.ConditionFalse
	})
	t.Logf("ready %v after the policy controller recovered", took)
}
