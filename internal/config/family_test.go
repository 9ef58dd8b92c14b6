package config

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// clusterCIDRs may hold prefixes of both families; an IPv4-mapped IPv6
// prefix, a zoned one and host bits are refused with the index named.
func TestValidateClusterCIDRsBothFamilies(t *testing.T) {
	c := Default()
	c.NodeName = "n1"
	c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}
	if err := c.Validate(); err != nil {
		t.Fatalf("dual clusterCIDRs refused: %v", err)
	}
	c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("fd00:10:244::/56")}
	if err := c.Validate(); err != nil {
		t.Fatalf("IPv6 clusterCIDRs refused: %v", err)
	}
	c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("fd00:10:244::1/56"), netip.MustParsePrefix("::ffff:10.0.0.0/104")}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "clusterCIDRs[0]: fd00:10:244::1/56 has host bits set (did you mean fd00:10:244::/56?)") ||
		!strings.Contains(err.Error(), "clusterCIDRs[1]: ::ffff:10.0.0.0/104 is not a valid IPv4 or IPv6 prefix") {
		t.Errorf("Validate = %v", err)
	}
}

// vxlan.device6 has a default, a flag, a length limit and must differ
// from vxlan.device.
func TestVXLANDevice6(t *testing.T) {
	if d := Default(); d.VXLAN.Device6 != "trellis.vxlan6" {
		t.Errorf("default vxlan.device6 %q", d.VXLAN.Device6)
	}
	var f Flags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.AddFlags(fs)
	if err := fs.Parse([]string{"--vxlan-device6", "trl.vx6", "--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Complete(func(string) string { return "n1" })
	if err != nil {
		t.Fatal(err)
	}
	if c.VXLAN.Device6 != "trl.vx6" || len(c.ClusterCIDRs) != 2 {
		t.Errorf("vxlan.device6 %q clusterCIDRs %v", c.VXLAN.Device6, c.ClusterCIDRs)
	}
	c.VXLAN.Device6 = c.VXLAN.Device
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "vxlan.device6") {
		t.Errorf("same name for both devices: %v", err)
	}
	c.VXLAN.Device6 = "a-very-long-device-name"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "vxlan.device6") {
		t.Errorf("long name: %v", err)
	}
}
