package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/trellisnet/trellis/internal/config"
)

func TestMissingCaps(t *testing.T) {
	status := filepath.Join(t.TempDir(), "status")
	// NET_ADMIN (12) and BPF (39) but not PERFMON (38).
	eff := uint64(1<<12 | 1<<39)
	if err := os.WriteFile(status, []byte(fmt.Sprintf("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t%016x\nCapBnd:\t0\n", eff)), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := effectiveCaps(status)
	if err != nil || got != eff {
		t.Fatalf("effectiveCaps = %x, %v; want %x", got, err, eff)
	}
	cfg := config.Default()
	if m := missingCaps(got, requiredCaps(cfg)); !reflect.DeepEqual(m, []string{"CAP_PERFMON"}) {
		t.Errorf("missing = %v, want [CAP_PERFMON]", m)
	}
	off := false
	cfg.FastPath = &off
	if m := missingCaps(got, requiredCaps(cfg)); len(m) != 0 {
		t.Errorf("fast path off: missing = %v, want none", m)
	}
	if m := missingCaps(0, requiredCaps(cfg)); !reflect.DeepEqual(m, []string{"CAP_NET_ADMIN"}) {
		t.Errorf("no capabilities: missing = %v", m)
	}
	if _, err := effectiveCaps(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing status file: no error")
	}
}
