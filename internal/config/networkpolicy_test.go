package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// A boolean setting: on by default, off from the file, the flag overrides
// the file.
func testBoolSetting(t *testing.T, key, flag string, enabled func(*Config) bool) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("nodeName: n1\n"+key+": false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want bool
	}{
		{[]string{"--node-name=n1"}, true},
		{[]string{"--config=" + file}, false},
		{[]string{"--config=" + file, "--" + flag + "=true"}, true},
		{[]string{"--node-name=n1", "--" + flag + "=false"}, false},
	}
	for _, tc := range cases {
		if got := enabled(completeArgs(t, tc.args)); got != tc.want {
			t.Errorf("%v: %s = %v, want %v", tc.args, key, got, tc.want)
		}
	}
}

func TestNetworkPolicySetting(t *testing.T) {
	testBoolSetting(t, "networkPolicy", "network-policy", (*Config).NetworkPolicyEnabled)
}

func TestFastPathSetting(t *testing.T) {
	testBoolSetting(t, "fastPath", "fast-path", (*Config).FastPathEnabled)
}

// policyDenyLog: off by default, from the file, flag overrides the file,
// and a value outside the nflog group range is rejected by Validate.
func TestPolicyDenyLogSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("nodeName: n1\npolicyDenyLog: 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args    []string
		want    int
		invalid bool
	}{
		{[]string{"--node-name=n1"}, 0, false},
		{[]string{"--config=" + file}, 7, false},
		{[]string{"--config=" + file, "--policy-deny-log-group=0"}, 0, false},
		{[]string{"--node-name=n1", "--policy-deny-log-group=65535"}, 65535, false},
		{[]string{"--node-name=n1", "--policy-deny-log-group=65536"}, 65536, true},
		{[]string{"--node-name=n1", "--policy-deny-log-group=-1"}, -1, true},
	}
	for _, tc := range cases {
		c := completeArgs(t, tc.args)
		if c.PolicyDenyLog != tc.want {
			t.Errorf("%v: PolicyDenyLog = %d, want %d", tc.args, c.PolicyDenyLog, tc.want)
		}
		err := c.Validate()
		if tc.invalid && (err == nil || !strings.Contains(err.Error(), "policyDenyLog")) {
			t.Errorf("%v: Validate() = %v, want a policyDenyLog error", tc.args, err)
		}
		if !tc.invalid && err != nil {
			t.Errorf("%v: Validate() = %v, want nil", tc.args, err)
		}
	}
}

// completeArgs parses args as agent flags and completes the Config.
func completeArgs(t *testing.T, args []string) *Config {
	t.Helper()
	var f Flags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	c, err := f.Complete(func(string) string { return "" })
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return c
}
