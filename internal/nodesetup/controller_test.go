package nodesetup

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing"
)

type fakeRoutes struct {
	ready  bool
	reason string
}

func (f *fakeRoutes) Ready() (bool, string) { return f.ready, f.reason }

type fakeDataplane struct {
	ready, failed bool
	reason        string
}

func (f *fakeDataplane) DataplaneReady() (bool, bool, string) { return f.ready, f.failed, f.reason }
func (f *fakeDataplane) DataplaneTables() []podlink.NFTable {
	return []podlink.NFTable{{Family: "inet", Name: "trellis-policy"}}
}

type fakeUnderlay struct{ mtu int }

func (f fakeUnderlay) Underlay(ip netip.Addr) (routing.Underlay, error) {
	return routing.Underlay{Device: "eth0", Prefix: netip.PrefixFrom(ip, 24), MTU: f.mtu}, nil
}

type fakeSysctls map[string]string

func (f fakeSysctls) Set(p, v string) error { f[p] = v; return nil }

type fixture struct {
	cfg    *config.Config
	client *fake.Clientset
	idx    cache.Indexer
	routes *fakeRoutes
	dp     *fakeDataplane
	sys    fakeSysctls
	c      *Controller
}

func newFixture(t *testing.T, node *v1.Node, mode config.RoutingMode) *fixture {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src", "trellis-cni")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho plugin v1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{NodeName: node.Name, RoutingMode: mode, CNIPluginSource: src,
		CNIBinDir: filepath.Join(dir, "bin"), CNIConfDir: filepath.Join(dir, "net.d"),
		NodeStateFile: filepath.Join(dir, "state", "node-state.json")}
	cfg.ApplyDefaults()
	f := &fixture{cfg: cfg, client: fake.NewClientset(node), idx: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		routes: &fakeRoutes{reason: "routes not programmed yet"}, dp: &fakeDataplane{ready: true}, sys: fakeSysctls{}}
	if err := f.idx.Add(node); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Agent: cfg, NodeAPI: f.client.CoreV1().Nodes(), Nodes: corelisters.NewNodeLister(f.idx),
		Routes: f.routes, Dataplane: f.dp, Underlay: fakeUnderlay{mtu: 1500}, Sysctls: f.sys})
	if err != nil {
		t.Fatal(err)
	}
	c.bootID = func() (string, error) { return "boot-1", nil }
	f.c = c
	return f
}

func testNode(podCIDRs ...string) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node1"},
		Spec:       v1.NodeSpec{PodCIDRs: podCIDRs},
		Status:     v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.1.11"}}},
	}
}

func (f *fixture) conflistPath() string { return filepath.Join(f.cfg.CNIConfDir, ConflistName) }

func (f *fixture) apiNode(t *testing.T) *v1.Node {
	t.Helper()
	n, err := f.client.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNoPodCIDRWritesNotReadyStateAndNoConflist(t *testing.T) {
	f := newFixture(t, testNode(), config.ModeAuto)
	if err := f.c.Sync(context.Background()); err == nil {
		t.Error("Sync without pod CIDR returned nil; want an error so the runner retries")
	}
	st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil {
		t.Fatalf("node state file: %v", err)
	}
	if st.Ready || st.Reason == "" || len(st.PodCIDRs) != 0 {
		t.Errorf("state %+v, want not ready with a reason and no CIDRs", st)
	}
	if _, err := os.Stat(f.conflistPath()); !os.IsNotExist(err) {
		t.Errorf("conflist written before the node has a pod CIDR (err %v)", err)
	}
	if f.sys["net/ipv4/ip_forward"] != "1" {
		t.Errorf("ip_forward not set: %v", f.sys)
	}
}

func TestReadinessFollowsRoutes(t *testing.T) {
	f := newFixture(t, testNode("10.244.1.0/24"), config.ModeVXLAN)
	ctx := context.Background()
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready || st.MTU != 1450 || len(st.PodCIDRs) != 1 || st.PodCIDRs[0] != netip.MustParsePrefix("10.244.1.0/24") {
		t.Errorf("state before routes: %+v; want not ready, MTU 1450, 10.244.1.0/24", st)
	}
	var conf map[string]any
	data, err := os.ReadFile(f.conflistPath())
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatal(err)
	}
	plugin := conf["plugins"].([]any)[0].(map[string]any)
	if conf["cniVersion"] != config.DefaultCNIConfVersion || conf["name"] != "trellis" || plugin["type"] != "trellis-cni" ||
		plugin["mtu"].(float64) != 1450 || plugin["nodeStateFile"] != f.cfg.NodeStateFile ||
		plugin["ipam"].(map[string]any)["dataDir"] != config.DefaultIPAMDataDir {
		t.Errorf("conflist does not match the contract:\n%s", data)
	}
	installed, err := os.ReadFile(filepath.Join(f.cfg.CNIBinDir, PluginName))
	if err != nil || string(installed) != "#!/bin/sh\necho plugin v1\n" {
		t.Errorf("plugin not installed: %q %v", installed, err)
	}
	n := f.apiNode(t)
	if n.Annotations[routing.AnnotationVTEPMAC] != routing.VTEPMAC("node1") || n.Annotations[routing.AnnotationNodeIP] != "10.0.1.11" {
		t.Errorf("annotations %v", n.Annotations)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable {
			t.Errorf("NetworkUnavailable set before routes were programmed: %+v", c)
		}
	}

	f.routes.ready, f.routes.reason = true, ""
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := podlink.ReadNodeState(f.cfg.NodeStateFile); st == nil || !st.Ready {
		t.Errorf("state not ready after routes: %+v", st)
	}
	found := false
	for _, c := range f.apiNode(t).Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable && c.Status == v1.ConditionFalse && c.Reason == ConditionReason {
			found = true
		}
	}
	if !found {
		t.Errorf("NetworkUnavailable=False not set: %+v", f.apiNode(t).Status.Conditions)
	}
}

func TestSteadyStateWritesNothing(t *testing.T) {
	f := newFixture(t, testNode("10.244.1.0/24"), config.ModeNative)
	f.routes.ready = true
	ctx := context.Background()
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Let the lister see what the API now holds (annotations, condition).
	if err := f.idx.Update(f.apiNode(t)); err != nil {
		t.Fatal(err)
	}
	stat := func(p string) os.FileInfo {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	s1, c1 := stat(f.cfg.NodeStateFile), stat(f.conflistPath())
	f.client.ClearActions()
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if s2 := stat(f.cfg.NodeStateFile); !s2.ModTime().Equal(s1.ModTime()) {
		t.Error("node state file rewritten without a change")
	}
	if c2 := stat(f.conflistPath()); !c2.ModTime().Equal(c1.ModTime()) {
		t.Error("conflist rewritten without a change")
	}
	if a := f.client.Actions(); len(a) != 0 {
		t.Errorf("API calls in steady state: %v", a)
	}
	if _, ok := f.apiNode(t).Annotations[routing.AnnotationVTEPMAC]; ok {
		t.Error("native mode published a VTEP MAC")
	}
}

func TestInstallPlugin(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "trellis-cni-src")
	bin := filepath.Join(dir, "bin")
	if _, err := InstallPlugin(src, bin); err == nil {
		t.Error("missing source and destination accepted")
	}
	if err := os.WriteFile(src, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if ok, err := InstallPlugin(src, bin); !ok || err != nil {
		t.Fatalf("first install = %v, %v", ok, err)
	}
	if ok, err := InstallPlugin(src, bin); ok || err != nil {
		t.Errorf("same bytes reinstalled: %v, %v", ok, err)
	}
	if err := os.WriteFile(src, []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if ok, err := InstallPlugin(src, bin); !ok || err != nil {
		t.Errorf("upgrade = %v, %v", ok, err)
	}
	fi, err := os.Stat(filepath.Join(bin, PluginName))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("installed plugin mode %v, %v", fi, err)
	}
	if got, err := os.ReadFile(filepath.Join(bin, PluginName)); err != nil || string(got) != "v2" {
		t.Errorf("installed plugin holds %q (%v), want the upgraded source", got, err)
	}
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	if ok, err := InstallPlugin(src, bin); ok || err != nil {
		t.Errorf("missing source with installed destination = %v, %v; want no-op", ok, err)
	}
}

// Files larger than the comparison buffer: equal, differing in the last
// byte of a later chunk, and one a prefix of the other.
func TestSameFilesAcrossChunks(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	data := make([]byte, 100_003)
	for i := range data {
		data[i] = byte(i * 7)
	}
	write := func(p string, d []byte) {
		t.Helper()
		if err := os.WriteFile(p, d, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(a, data)
	write(b, data)
	if same, err := sameFiles(a, b); !same || err != nil {
		t.Errorf("equal files: %v, %v", same, err)
	}
	changed := append([]byte(nil), data...)
	changed[len(changed)-1]++
	write(b, changed)
	if same, err := sameFiles(a, b); same || err != nil {
		t.Errorf("last byte differs: %v, %v", same, err)
	}
	changed = append([]byte(nil), data...)
	changed[70_000]++
	write(b, changed)
	if same, err := sameFiles(a, b); same || err != nil {
		t.Errorf("middle byte differs: %v, %v", same, err)
	}
	write(b, data[:65536])
	if same, err := sameFiles(a, b); same || err != nil {
		t.Errorf("prefix: %v, %v", same, err)
	}
}
