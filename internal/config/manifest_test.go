package config

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// The ConfigMap shipped in deploy/trellis.yaml is a valid agent
// configuration: every key is known (LoadFile is strict) and it validates
// once the node name, which the DaemonSet passes by env, is set.
func TestShippedConfigMapIsValid(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "trellis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	found := false
	for _, doc := range bytes.Split(raw, []byte("\n---")) {
		if err := yaml.Unmarshal(doc, &cm); err != nil || cm.Kind != "ConfigMap" || cm.Data["config.yaml"] == "" {
			continue
		}
		found = true
		file := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(file, []byte(cm.Data["config.yaml"]), 0o644); err != nil {
			t.Fatal(err)
		}
		c := &Config{}
		if err := LoadFile(file, c); err != nil {
			t.Fatalf("the shipped config.yaml does not load: %v", err)
		}
		c.NodeName = "node1"
		c.ApplyDefaults()
		if err := c.Validate(); err != nil {
			t.Fatalf("the shipped config.yaml does not validate: %v", err)
		}
		if !c.FastPathEnabled() || !c.NetworkPolicyEnabled() || c.RoutingMode != ModeAuto {
			t.Errorf("shipped defaults changed: fastPath %v, networkPolicy %v, routingMode %s",
				c.FastPathEnabled(), c.NetworkPolicyEnabled(), c.RoutingMode)
		}
	}
	if !found {
		t.Fatal("deploy/trellis.yaml has no ConfigMap with config.yaml")
	}
}
