package controlplane

import (
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// flags returns the flags of component name in a lab of family.
func flags(t *testing.T, family, name string) string {
	t.Helper()
	topo, err := topology.Plan(topology.Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443, IPFamily: family})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Components(state.Paths{Root: "/x"}, topo, map[string]string{}) {
		if c.Name == name {
			return strings.Join(c.Argv[1:], " ") + " "
		}
	}
	t.Fatalf("no component %s", name)
	return ""
}

func TestControlPlaneFlagsPerIPFamily(t *testing.T) {
	for _, c := range []struct {
		family, component string
		want, notWant     []string
	}{
		{"", "kube-apiserver", []string{"--service-cluster-ip-range=10.96.0.0/16 ", "--advertise-address=172.30.1.2 ", "--bind-address=0.0.0.0 "}, nil},
		{"", "kube-controller-manager", []string{"--cluster-cidr=10.244.0.0/16 --node-cidr-mask-size=24 --service-cluster-ip-range=10.96.0.0/16 "},
			[]string{"-ipv4", "-ipv6"}},
		{topology.Dual, "kube-apiserver", []string{"--service-cluster-ip-range=10.96.0.0/16,fd74:7265:6c02::/112 ",
			"--advertise-address=172.30.1.2 ", "--bind-address=:: "}, nil},
		{topology.Dual, "kube-controller-manager", []string{"--cluster-cidr=10.244.0.0/16,fd74:7265:6c01::/48 ",
			"--node-cidr-mask-size-ipv4=24 ", "--node-cidr-mask-size-ipv6=64 ", "--service-cluster-ip-range=10.96.0.0/16,fd74:7265:6c02::/112 "},
			[]string{"--node-cidr-mask-size="}},
		{topology.IPv6, "kube-apiserver", []string{"--service-cluster-ip-range=fd74:7265:6c02::/112 ",
			"--advertise-address=fd74:7265:6c00:1::2 ", "--bind-address=:: "}, nil},
		{topology.IPv6, "kube-controller-manager", []string{"--cluster-cidr=fd74:7265:6c01::/48 --node-cidr-mask-size=64 "},
			[]string{"10.244.", "-ipv4", "-ipv6"}},
	} {
		got := flags(t, c.family, c.component)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%q %s lacks %q: %s", c.family, c.component, w, got)
			}
		}
		for _, w := range c.notWant {
			if strings.Contains(got, w) {
				t.Errorf("%q %s has %q: %s", c.family, c.component, w, got)
			}
		}
	}
}
