package lab

import (
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// The lab's settings reach the agent's configuration as the agent reads it.
func TestLabOverridesCarryEncryption(t *testing.T) {
	for _, c := range []struct{ flag, want string }{{"", "none"}, {"none", "none"}, {"wireguard", "wireguard"}} {
		topo, err := topology.Plan(topology.Options{Nodes: 2, Subnets: 1, RoutingMode: "vxlan", Encryption: c.flag, APIPort: 16443})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := install.MergeConfig("routingMode: auto\n", labOverrides(topo))
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		if err := config.ParseFile([]byte(doc), cfg); err != nil {
			t.Fatalf("--encryption %q: the agent refuses its configuration: %v\n%s", c.flag, err, doc)
		}
		if string(cfg.Encryption) != c.want || cfg.RoutingMode != "vxlan" {
			t.Errorf("--encryption %q: agent config has encryption %q, mode %q; want %q, vxlan", c.flag, cfg.Encryption, cfg.RoutingMode, c.want)
		}
	}
	if _, err := topology.Plan(topology.Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", Encryption: "ipsec", APIPort: 16443}); err == nil ||
		!strings.Contains(err.Error(), "--encryption") {
		t.Errorf("--encryption ipsec: %v, want an error naming the flag", err)
	}
}
