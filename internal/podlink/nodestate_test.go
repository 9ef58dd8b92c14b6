package podlink

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeStateWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "node-state.json")
	in := &NodeState{NodeName: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, MTU: 1450, Ready: true}
	if err := WriteNodeState(path, in); err != nil {
		t.Fatal(err)
	}
	out, err := ReadNodeState(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.Version != NodeStateVersion || out.NodeName != "n1" || out.MTU != 1450 || !out.Ready ||
		len(out.PodCIDRs) != 1 || out.PodCIDRs[0] != in.PodCIDRs[0] || out.UpdatedAt.IsZero() {
		t.Fatalf("round trip: %+v", out)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

func TestNodeStateReadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadNodeState(filepath.Join(dir, "absent.json")); !errors.Is(err, ErrNoNodeState) {
		t.Fatalf("absent file: %v", err)
	}
	for name, content := range map[string]string{
		"garbage.json": `{"version":`,
		"future.json":  `{"version":99,"podCIDRs":[]}`,
		"badcidr.json": `{"version":1,"podCIDRs":["10.0.0.0/99"]}`,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadNodeState(p)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: want an error naming the file, got %v", name, err)
		}
	}
}
