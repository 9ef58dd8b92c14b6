package state

import (
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/lab/topology"
)

func TestNamedLabsDoNotShareNames(t *testing.T) {
	def, e2e := NewPaths(""), NewPaths("e2e")
	if def.Root == e2e.Root || def.CgroupRoot() == e2e.CgroupRoot() || DefaultAPIPort("") == DefaultAPIPort("e2e") {
		t.Errorf("default and named lab share state, cgroup or port: %+v %+v", def, e2e)
	}
	if strings.HasPrefix(e2e.NetnsPrefix()+"node1", def.NetnsPrefix()) ||
		strings.HasPrefix(NewPaths("e2ex").NetnsPrefix()+"node1", e2e.NetnsPrefix()) {
		t.Errorf("netns prefixes overlap: %q %q", def.NetnsPrefix(), e2e.NetnsPrefix())
	}
	topo, err := topology.Plan(topology.Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 17000, NetnsPrefix: e2e.NetnsPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range topo.Netnses() {
		if !strings.HasPrefix(n, "tle2e-") {
			t.Errorf("netns %q outside the named lab's prefix", n)
		}
	}
	for _, bad := range []string{"E2E", "a-b", "toolongname", "../x"} {
		if ValidateName(bad) == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}
