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
	return flagsOf(t, topology.Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443, IPFamily: family}, name)
}

// flagsOf returns the flags of component name in a lab with options o.
func flagsOf(t *testing.T, o topology.Options, name string) string {
	t.Helper()
	topo, err := topology.Plan(o)
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

// --cluster-cidr and --node-cidr-mask set the IPv4 family's range and node
// mask: the single-family flags in an IPv4 lab, the IPv4 ones in a dual lab.
func TestControlPlaneClusterCIDROption(t *testing.T) {
	for _, c := range []struct {
		family string
		want   []string
	}{
		{"", []string{"--cluster-cidr=10.244.0.0/14 --node-cidr-mask-size=27 --service-cluster-ip-range=10.96.0.0/16 "}},
		{topology.Dual, []string{"--cluster-cidr=10.244.0.0/14,fd74:7265:6c01::/48 ",
			"--node-cidr-mask-size-ipv4=27 ", "--node-cidr-mask-size-ipv6=64 "}},
	} {
		o := topology.Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443, IPFamily: c.family,
			ClusterCIDR: "10.244.0.0/14", NodeCIDRMask: 27}
		got := flagsOf(t, o, "kube-controller-manager")
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%q /14 /27: kube-controller-manager lacks %q: %s", c.family, w, got)
			}
		}
	}
}
