package tor

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trellisnet/trellis/internal/lab/topology"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

func plan(t *testing.T, o topology.Options) topology.Topology {
	t.Helper()
	if o.Nodes == 0 {
		o = topology.Options{Nodes: 3, Subnets: 2, RoutingMode: topology.RoutingModeBGP, BGP: true, APIPort: 16443}
	}
	topo, err := topology.Plan(o)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the rendering (go test -update rewrites it):\n%s", path, got)
	}
}

// The configuration of the default lab (3 nodes over 2 subnets) is pinned.
func TestRenderGolden(t *testing.T) {
	c, err := ConfigFor(plan(t, topology.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "bird.conf.golden", got)
	for _, want := range []string{
		"router id 172.30.250.1;",
		"route 172.30.251.0/24 via 172.30.250.2;",
		"neighbor range 172.30.1.0/24 external;", "neighbor range 172.30.2.0/24 external;",
		"local 172.30.1.1 as 65000;", "local 172.30.2.254 as 65000;",
		`interface "sub2" {`, "graceful restart on;", "bfd on;",
		"if net ~ [ 10.244.0.0/16+, 172.30.252.0/24+ ] then accept;",
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("rendered configuration lacks %q", want)
		}
	}
}

// BIRD itself accepts the rendered configuration (bird -p parses it), for
// one subnet and for the most the lab has.
func TestRenderParsesWithBIRD(t *testing.T) {
	bird, err := exec.LookPath("bird")
	if err != nil {
		t.Fatalf("bird is not installed: install the Debian package bird2 (make deps): %v", err)
	}
	for _, o := range []topology.Options{
		{Nodes: 1, Subnets: 1, RoutingMode: "auto", BGP: true, APIPort: 16443},
		{Nodes: 20, Subnets: topology.MaxSubnets, RoutingMode: topology.RoutingModeBGP, BGP: true, APIPort: 16443},
	} {
		c, err := ConfigFor(plan(t, o))
		if err != nil {
			t.Fatal(err)
		}
		data, err := Render(c)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "bird.conf")
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bird, "-p", "-c", f).CombinedOutput(); err != nil {
			t.Errorf("%d subnets: bird -p: %v: %s\n%s", o.Subnets, err, out, data)
		}
	}
	// And a broken one is refused: the check can fail.
	f := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(f, []byte("protocol bgp x { neighbor range 172.30.1.0/24 nonsense; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(bird, "-p", "-c", f).Run(); err == nil {
		t.Error("bird -p accepted a broken configuration")
	}
}

func TestConfigForNeedsBGP(t *testing.T) {
	if _, err := ConfigFor(plan(t, topology.Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443})); err == nil {
		t.Error("a lab without --bgp got a ToR configuration")
	}
}

// The lab's BGP objects are pinned too; the peers follow the subnets.
func TestObjectsGolden(t *testing.T) {
	topo := plan(t, topology.Options{Nodes: 3, Subnets: 2, RoutingMode: topology.RoutingModeBGP, BGP: true,
		BGPPeering: "FullMesh", BGPRestartTime: 30, APIPort: 16443})
	objs, err := Objects(topo)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, o := range objs {
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	golden(t, "objects.golden.yaml", b.Bytes())
	if len(objs) != 4 {
		t.Fatalf("got %d objects, want a configuration, 2 peers and an advertisement", len(objs))
	}
	if got := objs[0].GetName(); got != "default" || objs[0].GetKind() != "BGPConfiguration" {
		t.Errorf("first object %s %s, want BGPConfiguration default", objs[0].GetKind(), got)
	}
	for i, o := range objs[1:3] {
		addr, _, _ := unstructuredString(o.Object, "spec", "peerAddress")
		if want := topo.Subnets[i].Gateway.String(); addr != want {
			t.Errorf("%s peers with %s, want the subnet's gateway %s", o.GetName(), addr, want)
		}
	}
	if l := NodeLabels(topo.Nodes[1]); l[SubnetLabel] != "2" {
		t.Errorf("node2's labels %v, want subnet 2", l)
	}
	if _, err := Objects(plan(t, topology.Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 16443})); err == nil {
		t.Error("objects for a lab without --bgp")
	}
}

func unstructuredString(m map[string]any, path ...string) (string, bool, error) {
	for _, p := range path[:len(path)-1] {
		m, _ = m[p].(map[string]any)
	}
	s, ok := m[path[len(path)-1]].(string)
	return s, ok, nil
}

// The shipped CRDs load, and they are the four kinds of the API.
func TestLoadCRDs(t *testing.T) {
	crds, err := LoadCRDs(CRDDir(filepath.Join("..", "..", "..", "deploy")))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, c := range crds {
		k, _, _ := unstructuredString(c.Object, "spec", "names", "kind")
		kinds = append(kinds, k)
	}
	if got := strings.Join(kinds, ","); got != "BGPAdvertisement,BGPConfiguration,BGPNodeStatus,BGPPeer" {
		t.Errorf("CRD kinds %s", got)
	}
	if _, err := LoadCRDs(t.TempDir()); err == nil {
		t.Error("an empty directory gave CRDs")
	}
}
