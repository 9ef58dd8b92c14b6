package scaleplot

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/trellisnet/trellis/internal/scalebench"
)

func f(v float64) *float64 { return &v }

// synthetic is a three-step result in which idle CPU, routing and the
// transaction size were never measured and the margin only from the second
// step on (the first step has no previous one).
func synthetic() *scalebench.Result {
	return &scalebench.Result{Steps: []scalebench.Step{
		{Nodes: 100, Pods: 2000, Policies: 100, RSSMiB: f(36), HeapInuseMiB: f(14),
			ListSeconds: f(0.4), ResyncSeconds: f(0.2),
			PolicyChangeP50Ms: f(120), PolicyChangeP99Ms: f(240), PodAddP50Ms: f(90), PodAddP99Ms: f(200)},
		{Nodes: 1000, Pods: 20000, Policies: 1000, RSSMiB: f(70), HeapInuseMiB: f(40), MarginKiBPerPod: f(1.9),
			ListSeconds: f(1.5), ResyncSeconds: f(0.9),
			PolicyChangeP50Ms: f(130), PolicyChangeP99Ms: f(260), PodAddP50Ms: f(95), PodAddP99Ms: f(210)},
		{Nodes: 5000, Pods: 100000, Policies: 1000, RSSMiB: f(160), HeapInuseMiB: f(110), MarginKiBPerPod: f(1.2),
			ListSeconds: f(6), ResyncSeconds: f(2.5)},
	}}
}

func TestWriteDrawsMeasuredFiguresAsPNG(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	files, err := Write(synthetic(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range files {
		names = append(names, filepath.Base(p))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(b))
		if err != nil {
			t.Errorf("%s is not a PNG: %v", p, err)
			continue
		}
		if cfg.Width < 400 || cfg.Height < 200 {
			t.Errorf("%s is %dx%d pixels; want a readable figure", p, cfg.Width, cfg.Height)
		}
	}
	want := []string{"scale-memory.png", "scale-margin.png", "scale-resync.png", "scale-policy.png"}
	if !slices.Equal(names, want) {
		t.Errorf("wrote %v; want %v (figures without any value skipped)", names, want)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("%d files in %s; want %d", len(entries), dir, len(want))
	}
}

func TestWriteRejectsNoResult(t *testing.T) {
	if _, err := Write(nil, t.TempDir()); err == nil {
		t.Error("Write(nil) succeeded")
	}
}

func TestFigureNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, fig := range Figures() {
		if seen[fig.File] || filepath.Ext(fig.File) != ".png" || len(fig.Series) == 0 {
			t.Errorf("figure %q: duplicate, not .png, or without series", fig.File)
		}
		seen[fig.File] = true
	}
}

func TestPolicyCount(t *testing.T) {
	for _, c := range []struct {
		policies []int
		want     string
	}{{[]int{0, 0}, ""}, {[]int{1000, 1000}, ", 1,000 policies"}, {[]int{100, 0, 1000}, ", 100–1,000 policies"}} {
		var steps []scalebench.Step
		for _, n := range c.policies {
			steps = append(steps, scalebench.Step{Nodes: 1, Pods: 10, Policies: n})
		}
		if got := policyCount(steps); got != c.want {
			t.Errorf("policyCount(%v) = %q; want %q", c.policies, got, c.want)
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567", -2000: "-2,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q; want %q", n, got, want)
		}
	}
}
