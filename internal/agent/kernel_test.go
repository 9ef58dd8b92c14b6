//go:build kernel

package agent

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

type memSysctls map[string]string

func (m memSysctls) Set(p, v string) error { m[p] = v; return nil }

func node(name, ip, cidr string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}}}
	if cidr != "" {
		n.Spec.PodCIDRs = []string{cidr}
	}
	return n
}

// routeTo reports the trellis route for dst as "gw dev", or "".
func routeTo(t *testing.T, dp *netlinkprog.Programmer, dst string) string {
	t.Helper()
	rs, err := dp.ListRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Dst.String() == dst {
			l, err := dp.Handle.LinkByIndex(r.LinkIndex)
			if err != nil {
				t.Fatal(err)
			}
			return r.Gw.String() + " " + l.Attrs().Name
		}
	}
	return ""
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// The whole agent (informers, runners, node setup, routing, masquerade on a
// fake nftables) against a fake API server and a real kernel namespace.
func TestKernelAgentConvergesGarbageCollectsAndSurvivesRestart(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	dp := &netlinkprog.Programmer{Handle: n.Handle, NetnsPath: n.NS.Path()}
	dir := t.TempDir()
	cfg := &config.Config{NodeName: "node1", RoutingMode: config.ModeAuto, CNIPluginSource: "/proc/self/exe",
		CNIBinDir: dir + "/bin", CNIConfDir: dir + "/net.d", NodeStateFile: dir + "/node-state.json",
		MetricsBindAddress: "127.0.0.1:0"}
	cfg.ApplyDefaults()
	cfg.MinSyncInterval.Duration = 50 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(
		node("node1", "10.0.1.11", "10.244.1.0/24"),
		node("node2", "10.0.1.12", "10.244.2.0/24"),
		node("node3", "10.0.2.13", "10.244.3.0/24"),
	)
	nft := knftables.NewFake(knftables.IPv4Family, masq.TableName)
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, cfg, deps{api: fakeAPI(t, client), routes: dp, sysctls: memSysctls{}, nft: nft})
		}()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent returned %v", err)
			}
		}
	}
	stop := start()
	eventually(t, 5*time.Second, "routes programmed", func() bool {
		return routeTo(t, dp, "10.244.2.0/24") == "10.0.1.12 ul0" && routeTo(t, dp, "10.244.3.0/24") == "10.244.3.0 trellis.vxlan"
	})
	eventually(t, 5*time.Second, "node ready", func() bool {
		st, err := podlink.ReadNodeState(cfg.NodeStateFile)
		if err != nil || !st.Ready {
			return false
		}
		self, err := client.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range self.Status.Conditions {
			if c.Type == v1.NodeNetworkUnavailable && c.Status == v1.ConditionFalse {
				return true
			}
		}
		return false
	})

	// The resync gauges and the heap profile on the local API socket.
	ctx := context.Background()
	checkResyncMetricsAndPprof(ctx, t, agentapi.SocketPath(cfg.NodeStateFile))

	// A new node gets a route; a deleted node's route goes within a second.
	if _, err := client.CoreV1().Nodes().Create(ctx, node("node4", "10.0.1.14", "10.244.4.0/24"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 5*time.Second, "route to added node4", func() bool { return routeTo(t, dp, "10.244.4.0/24") == "10.0.1.14 ul0" })
	t.Logf("route to a new node after %v", took)
	if err := client.CoreV1().Nodes().Delete(ctx, "node3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	took = eventually(t, time.Second, "GC of deleted node3", func() bool { return routeTo(t, dp, "10.244.3.0/24") == "" })
	t.Logf("route to a deleted node gone after %v", took)
	if els, err := nft.ListElements(ctx, "set", masq.SetNoMasqDst); err != nil || len(els) != 3 {
		t.Errorf("masquerade exempt set %v (%v), want the 3 remaining pod CIDRs", els, err)
	}

	// Stop: nothing is removed. Meanwhile node2 changes address; the
	// restarted agent adopts what is still right and fixes the rest.
	stop()
	if routeTo(t, dp, "10.244.2.0/24") == "" || routeTo(t, dp, "10.244.4.0/24") == "" {
		t.Fatal("stopping the agent removed routes")
	}
	vx, err := dp.Handle.LinkByName("trellis.vxlan")
	if err != nil {
		t.Fatalf("stopping the agent removed the VXLAN device: %v", err)
	}
	n2, _ := client.CoreV1().Nodes().Get(ctx, "node2", metav1.GetOptions{})
	n2.Status.Addresses[0].Address = "10.0.1.22"
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop = start()
	defer stop()
	eventually(t, 5*time.Second, "route to node2 follows its new address", func() bool { return routeTo(t, dp, "10.244.2.0/24") == "10.0.1.22 ul0" })
	if routeTo(t, dp, "10.244.4.0/24") != "10.0.1.14 ul0" {
		t.Error("route to node4 lost across restart")
	}
	if vx2, err := dp.Handle.LinkByName("trellis.vxlan"); err != nil || vx2.Attrs().Index != vx.Attrs().Index {
		t.Errorf("VXLAN device recreated across restart (%v)", err)
	}
}

// checkResyncMetricsAndPprof reads /v1/metrics and /debug/pprof/heap from
// the agent's socket: the informer sync and the routing and node setup
// controllers' initial sync gauges are set, and the heap profile is
// served.
func checkResyncMetricsAndPprof(ctx context.Context, t *testing.T, sock string) {
	t.Helper()
	var out bytes.Buffer
	if err := agentapi.Get(ctx, sock, "/v1/metrics", &out); err != nil {
		t.Fatal(err)
	}
	value := func(series string) float64 {
		for _, l := range strings.Split(out.String(), "\n") {
			if rest, ok := strings.CutPrefix(l, series+" "); ok {
				v, err := strconv.ParseFloat(rest, 64)
				if err != nil {
					t.Fatalf("%s: %v", l, err)
				}
				return v
			}
		}
		t.Fatalf("/v1/metrics lacks %s", series)
		return 0
	}
	// Routing and node setup read only Nodes: they may sync before the
	// other caches have.
	if informer := value("trellis_agent_informer_sync_seconds"); informer <= 0 || informer > 30 {
		t.Errorf("informer sync = %v s, want within the test", informer)
	}
	for _, c := range []string{"routing", "nodesetup"} {
		if v := value(`trellis_agent_initial_sync_seconds{controller="` + c + `"}`); v <= 0 || v > 30 {
			t.Errorf("initial sync of %s = %v s, want within the test", c, v)
		}
	}
	out.Reset()
	if err := agentapi.Get(ctx, sock, agentapi.PprofPath+"heap", &out); err != nil {
		t.Fatal(err)
	}
	if b := out.Bytes(); len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("heap profile is not gzip-compressed (%d bytes)", len(b))
	}
}
