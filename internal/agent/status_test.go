package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

type fakeRoutes struct{}

func (fakeRoutes) Underlay(netip.Addr) (routing.Underlay, error) {
	return routing.Underlay{Device: "eth0", Prefix: netip.MustParsePrefix("10.0.0.1/24"), MTU: 1500}, nil
}
func (fakeRoutes) Apply(context.Context, *routing.Desired) error { return nil }

func statusNode(name, ip, cidr string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ip != "" {
		n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}
	}
	if cidr != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
	}
	return n
}

// runOnce runs r until its first sync finished.
func runOnce(t *testing.T, r *syncrunner.Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for r.Syncs() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if r.Syncs() == 0 {
		t.Fatalf("%s did not sync", r.Name())
	}
}

// TestStatusHandler serves /v1/status from a synced routing controller, a
// failing runner, a problem, the node state file and a fast path the
// kernel refused, and checks every part of the answer.
func TestStatusHandler(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range []*v1.Node{
		statusNode("n1", "10.0.0.1", "10.244.1.0/24"),
		statusNode("n2", "10.0.0.2", "10.244.2.0/24"), // same subnet: native
		statusNode("n3", "10.1.0.3", "10.244.3.0/24"), // routed: vxlan
		statusNode("n4", "10.0.0.4", ""),              // no pod CIDR yet
	} {
		if err := idx.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.NodeName, cfg.RoutingMode = "n1", config.ModeAuto
	cfg.NodeStateFile = filepath.Join(t.TempDir(), "node-state.json")
	cfg.MaxSyncInterval.Duration = time.Minute
	rc, err := routing.New(routing.Config{NodeName: "n1", Params: routing.Params{Mode: config.ModeAuto, VXLAN: cfg.VXLAN},
		Nodes: corelisters.NewNodeLister(idx), Kernel: fakeRoutes{}, Sync: syncrunner.Options{MaxInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	runOnce(t, rc.Runner)
	broken := syncrunner.New("masquerade", func(context.Context) error { return errors.New("nft said no") },
		syncrunner.Options{MaxInterval: time.Hour})
	runOnce(t, broken)
	probs, err := newProblems(prometheus.NewRegistry(), nil, "n1")
	if err != nil {
		t.Fatal(err)
	}
	probs.Report(context.Background(), "ForeignCNIConfig", "10-other.conflist sorts first")
	if err := podlink.WriteNodeState(cfg.NodeStateFile, &podlink.NodeState{Version: podlink.NodeStateVersion, NodeName: "n1",
		MTU: 1450, Ready: true, Dataplane: &podlink.Dataplane{BootID: "boot-1"}}); err != nil {
		t.Fatal(err)
	}
	src := &statusSource{cfg: cfg, version: "v1.2.3", routes: rc, probs: probs,
		runners:     []*syncrunner.Runner{rc.Runner, broken},
		ready:       []metrics.Check{{Name: "problems", Fn: probs.Check}},
		fastPathErr: errors.New("BTF not found")}

	rec := httptest.NewRecorder()
	src.handler().ServeHTTP(rec, httptest.NewRequest("GET", agentapi.StatusPath, nil))
	var st agentapi.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("decode %s: %v", rec.Body.String(), err)
	}
	if st.Version != "v1.2.3" || st.Node != "n1" || st.RoutingMode != "auto" || st.MTU != 1450 || st.MaxSyncInterval.Duration != time.Minute {
		t.Errorf("header = %+v", st)
	}
	if st.Ready || len(st.NotReady) != 1 || !strings.Contains(st.NotReady[0], "10-other.conflist") {
		t.Errorf("ready %v %q, want not ready naming the problem", st.Ready, st.NotReady)
	}
	if st.Problems["ForeignCNIConfig"] == "" {
		t.Errorf("problems = %v", st.Problems)
	}
	if len(st.Controllers) != 2 || st.Controllers[0].LastSuccess == nil || st.Controllers[0].Syncs == 0 ||
		st.Controllers[0].LastError != "" || st.Controllers[1].LastSuccess != nil || st.Controllers[1].LastError != "nft said no" {
		t.Errorf("controllers = %+v", st.Controllers)
	}
	want := []agentapi.Peer{
		{Node: "n2", Mode: "native", State: agentapi.PeerProgrammed, Routes: 1},
		{Node: "n3", Mode: "vxlan", State: agentapi.PeerProgrammed, Routes: 1},
		{Node: "n4", State: agentapi.PeerNotProgrammed, Reason: routing.ReasonNoPodCIDR},
	}
	if st.Routing.Routes != 2 || len(st.Routing.Peers) != len(want) {
		t.Fatalf("routing = %+v, want 2 routes and peers %+v", st.Routing, want)
	}
	for i, p := range st.Routing.Peers {
		p.Message = ""
		if p != want[i] {
			t.Errorf("peer %d = %+v, want %+v", i, p, want[i])
		}
	}
	if st.FastPath.State != agentapi.FastPathNotLoad || st.FastPath.Reason != "BTF not found" || st.FastPath.Loaded {
		t.Errorf("fast path = %+v", st.FastPath)
	}
	if !st.Dataplane.Ready || !st.Dataplane.Marker || st.Dataplane.BootID != "boot-1" {
		t.Errorf("dataplane = %+v", st.Dataplane)
	}
	if st.Policy.Enforced {
		t.Errorf("policy = %+v without a policy controller", st.Policy)
	}
}
