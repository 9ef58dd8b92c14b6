package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// networkPolicy: on by default, off from the file, flag overrides the file.
func TestNetworkPolicySetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("nodeName: n1\nnetworkPolicy: false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want bool
	}{
		{[]string{"--node-name=n1"}, true},
		{[]string{"--config=" + file}, false},
		{[]string{"--config=" + file, "--network-policy=true"}, true},
		{[]string{"--node-name=n1", "--network-policy=false"}, false},
	}
	for _, tc := range cases {
		var f Flags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		c, err := f.Complete(func(string) string { return "" })
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := c.NetworkPolicyEnabled(); got != tc.want {
			t.Errorf("%v: NetworkPolicyEnabled() = %v, want %v", tc.args, got, tc.want)
		}
	}
}
