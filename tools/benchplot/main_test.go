package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellisnet/trellis/internal/scalebench"
)

func TestRunReadsResultAndWritesPNGs(t *testing.T) {
	dir := t.TempDir()
	rss, tx := 40.0, 12.0
	r := scalebench.Result{Steps: []scalebench.Step{{Nodes: 100, Pods: 2000, RSSMiB: &rss, TxOpsPerChange: &tx}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "result.json")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img")
	if err := run([]string{"-in", in, "-out", out}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"scale-memory.png", "scale-tx-ops.png"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("%s not written: %v", name, err)
		}
	}
	if err := run([]string{"-in", filepath.Join(dir, "missing.json"), "-out", out}); err == nil {
		t.Error("a missing result file was not an error")
	}
}
