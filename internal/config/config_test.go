package config

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestDefaultIsValidOnceNodeNameSet(t *testing.T) {
	c := Default()
	c.NodeName = "n1"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.RoutingMode != ModeAuto || c.VXLAN.Device != "trellis.vxlan" || c.VXLAN.Port != 4789 || !c.MasqueradeEnabled() {
		t.Errorf("unexpected defaults: %+v", c)
	}
	// Metrics and health listen on the loopback only unless configured.
	host, _, err := net.SplitHostPort(c.MetricsBindAddress)
	if a, perr := netip.ParseAddr(host); err != nil || perr != nil || !a.IsLoopback() {
		t.Errorf("default metricsBindAddress %q is not a loopback address", c.MetricsBindAddress)
	}
}

func TestMetricsBindAddress(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:9465": true, "10.0.0.5:9465": true, "[fd00::5]:9465": true,
		"[10.0.0.5]:9465": true, ":9465": true, "0.0.0.0:9465": true,
		"node1:9465": false, "10.0.0.5": false, "10.0.0.5:http": false, "10.0.0.5:70000": false} {
		c := Default()
		c.NodeName = "n1"
		c.MetricsBindAddress = addr
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("metricsBindAddress %q: Validate() = %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.RoutingMode = "ospf"
	c.MTU = 100
	c.VXLAN.Device = "a-very-long-device-name"
	c.VXLAN.VNI = 1 << 24
	c.VXLAN.Port = 70000
	c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.1.1/16")}
	c.CNIBinDir = "relative/bin"
	c.CNILogLevel = "loud"
	c.CNIConfVersion = "2.0.0"
	c.MaxSyncInterval.Duration = time.Millisecond
	c.APIServer = "http://10.0.0.1:6443"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted an invalid config")
	}
	for _, want := range []string{"nodeName", "routingMode", "mtu", "vxlan.device", "vxlan.vni", "vxlan.port",
		"clusterCIDRs[0]", "cniBinDir", "cniLogLevel", "cniConfVersion", "maxSyncInterval", "apiServer"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

// apiServer must be an https URL with a host and no path.
func TestValidateAPIServer(t *testing.T) {
	for v, ok := range map[string]bool{"": true, "https://10.0.0.1:6443": true, "https://api.example:443/": true,
		"http://10.0.0.1:6443": false, "10.0.0.1:6443": false, "https://": false, "https://h:6443/api": false} {
		c := Default()
		c.NodeName = "n1"
		c.APIServer = v
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("apiServer %q: Validate() = %v, want ok=%v", v, err, ok)
		}
	}
}

func TestParseFileYAMLAndStrict(t *testing.T) {
	c := &Config{}
	err := ParseFile([]byte(`
routingMode: vxlan
clusterCIDRs: ["10.244.0.0/16"]
nonMasqueradeCIDRs: ["192.168.0.0/16"]
masquerade: false
mtu: 1400
vxlan: {vni: 7, port: 8472, disableTxChecksumOffload: true}
maxSyncInterval: 2m
`), c)
	if err != nil {
		t.Fatal(err)
	}
	if c.RoutingMode != ModeVXLAN || c.ClusterCIDRs[0] != netip.MustParsePrefix("10.244.0.0/16") ||
		c.MasqueradeEnabled() || c.MTU != 1400 || c.VXLAN.VNI != 7 || !c.VXLAN.DisableTxChecksumOffload ||
		c.MaxSyncInterval.Duration != 2*time.Minute || len(c.NonMasqueradeCIDRs) != 1 {
		t.Errorf("parsed %+v", c)
	}
	if err := ParseFile([]byte("routingMod: vxlan\n"), &Config{}); err == nil {
		t.Error("unknown key accepted (typos must fail)")
	}
	if err := ParseFile([]byte(`clusterCIDRs: ["nope"]`), &Config{}); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestFlagsOverrideFileOverridesDefaults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("routingMode: vxlan\nmtu: 1400\ncniBinDir: /file/bin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var f Flags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.AddFlags(fs)
	if err := fs.Parse([]string{"--config", file, "--routing-mode", "native", "--cluster-cidr", "10.244.0.0/16,10.245.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Complete(func(k string) string {
		if k == "NODE_NAME" {
			return "from-env"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.RoutingMode != ModeNative {
		t.Errorf("flag did not override file: mode %s", c.RoutingMode)
	}
	if c.MTU != 1400 || c.CNIBinDir != "/file/bin" {
		t.Errorf("file values lost: mtu %d cniBinDir %s", c.MTU, c.CNIBinDir)
	}
	if c.NodeName != "from-env" || len(c.ClusterCIDRs) != 2 || c.CNIConfDir != DefaultCNIConfDir {
		t.Errorf("env/flag/default: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestFlagsBadCIDRStillValidatesRest(t *testing.T) {
	var f Flags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.AddFlags(fs)
	if err := fs.Parse([]string{"--cluster-cidr", "bad", "--routing-mode", "x"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Complete(nil)
	if err == nil || c == nil {
		t.Fatalf("Complete = %v, %v; want config and error", c, err)
	}
	if verr := c.Validate(); verr == nil || !strings.Contains(verr.Error(), "routingMode") {
		t.Errorf("Validate after a flag error: %v", verr)
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("routingMode: auto\n"))
	f.Add([]byte(`{"vxlan":{"vni":1},"clusterCIDRs":["10.0.0.0/8"]}`))
	f.Add([]byte("minSyncInterval: 1s\nmaxSyncInterval: x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &Config{}
		if err := ParseFile(data, c); err != nil {
			return
		}
		c.ApplyDefaults()
		_ = c.Validate()
	})
}

// --sysctl-root and --vxlan-device reach the config; a relative sysctl
// root is refused.
func TestSysctlRootAndVXLANDeviceFlags(t *testing.T) {
	var f Flags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.AddFlags(fs)
	if err := fs.Parse([]string{"--sysctl-root", "/host/proc/sys", "--vxlan-device", "trl.vx"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Complete(func(string) string { return "n1" })
	if err != nil {
		t.Fatal(err)
	}
	if c.SysctlRoot != "/host/proc/sys" || c.VXLAN.Device != "trl.vx" {
		t.Errorf("sysctlRoot %q vxlan.device %q", c.SysctlRoot, c.VXLAN.Device)
	}
	if d := Default(); d.SysctlRoot != "/proc/sys" {
		t.Errorf("default sysctlRoot %q", d.SysctlRoot)
	}
	c.SysctlRoot = "host/proc/sys"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sysctlRoot") {
		t.Errorf("relative sysctlRoot: %v", err)
	}
}

// The encryption flags override the file; unset, the file's values stay.
func TestEncryptionFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("encryption: wireguard\nwireguard:\n  engine: kernel\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args       []string
		enc        Encryption
		strict     bool
		engine     WireGuardEngine
		validation bool
	}{
		{nil, EncryptionWireGuard, true, EngineKernel, true},
		{[]string{"--wireguard-engine=userspace", "--encryption-strict=false"}, EncryptionWireGuard, false, EngineUserspace, true},
		{[]string{"--encryption=none"}, EncryptionNone, false, EngineKernel, true},
		{[]string{"--encryption=none", "--encryption-strict"}, EncryptionNone, false, EngineKernel, false},
	} {
		var f Flags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.AddFlags(fs)
		if err := fs.Parse(append([]string{"--config", file}, c.args...)); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.Complete(func(string) string { return "n1" })
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Encryption != c.enc || cfg.EncryptionStrictEnabled() != c.strict || cfg.WireGuard.Engine != c.engine {
			t.Errorf("%v: encryption %s strict %v engine %s; want %s %v %s", c.args, cfg.Encryption, cfg.EncryptionStrictEnabled(),
				cfg.WireGuard.Engine, c.enc, c.strict, c.engine)
		}
		if err := cfg.Validate(); (err == nil) != c.validation {
			t.Errorf("%v: Validate = %v, want valid %v", c.args, err, c.validation)
		}
	}
}

// routingMode bgp is valid, but not with encryption: the message names
// both settings and the ways out.
func TestValidateBGPRefusesEncryption(t *testing.T) {
	c := Default()
	c.NodeName = "n1"
	c.RoutingMode = ModeBGP
	if err := c.Validate(); err != nil {
		t.Fatalf("routingMode bgp: %v", err)
	}
	c.Encryption = EncryptionWireGuard
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "routingMode bgp with encryption wireguard: not supported") ||
		!strings.Contains(err.Error(), "encryption none with bgp") {
		t.Fatalf("routingMode bgp + encryption wireguard: Validate() = %v", err)
	}
}

// The agent's namespace comes from the downward API (POD_NAMESPACE),
// kube-system without it.
func TestNamespaceFromEnv(t *testing.T) {
	for env, want := range map[string]string{"trellis": "trellis", "": DefaultNamespace} {
		var f Flags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.AddFlags(fs)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.Complete(func(k string) string {
			if k == "POD_NAMESPACE" {
				return env
			}
			return "n1"
		})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Namespace != want {
			t.Errorf("POD_NAMESPACE=%q: namespace %q, want %q", env, cfg.Namespace, want)
		}
	}
}

// masqueradeIPv6 follows masquerade unless set; nonMasqueradeCIDRs take
// prefixes of both families (each masquerade table uses its own).
func TestMasqueradeIPv6Setting(t *testing.T) {
	f, tr := false, true
	for _, c := range []struct {
		masq, masq6 *bool
		want        bool
	}{{nil, nil, true}, {&f, nil, false}, {&f, &tr, true}, {nil, &f, false}, {&tr, &f, false}} {
		cfg := &Config{Masquerade: c.masq, MasqueradeIPv6: c.masq6}
		if got := cfg.MasqueradeIPv6Enabled(); got != c.want {
			t.Errorf("masquerade %v masqueradeIPv6 %v: IPv6 enabled %v, want %v", c.masq, c.masq6, got, c.want)
		}
	}
	cfg := &Config{}
	if err := ParseFile([]byte("masqueradeIPv6: false\nnonMasqueradeCIDRs: [\"192.168.0.0/16\", \"fd00:beef::/48\"]\n"), cfg); err != nil {
		t.Fatal(err)
	}
	cfg.NodeName = "n1"
	d := Default()
	d.NodeName, d.MasqueradeIPv6, d.NonMasqueradeCIDRs = "n1", cfg.MasqueradeIPv6, cfg.NonMasqueradeCIDRs
	if err := d.Validate(); err != nil || d.MasqueradeIPv6Enabled() || !d.MasqueradeEnabled() {
		t.Fatalf("dual nonMasqueradeCIDRs with masqueradeIPv6 false: %v (IPv6 %v, IPv4 %v)", err, d.MasqueradeIPv6Enabled(), d.MasqueradeEnabled())
	}
	d.NonMasqueradeCIDRs = append(d.NonMasqueradeCIDRs, netip.MustParsePrefix("::ffff:10.0.0.0/104"))
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "nonMasqueradeCIDRs[2]") {
		t.Errorf("IPv4-mapped prefix accepted: %v", err)
	}
}
