package dpbench

import (
	"bytes"
	"strings"
	"testing"
)

func TestReportVerdicts(t *testing.T) {
	var buf bytes.Buffer
	Report(&buf, []Row{
		{Name: "met", Target: 0.95, Base: []float64{10, 10, 10}, Subj: []float64{9.6, 9.7, 9.4}},
		{Name: "missed", Target: 0.95, Base: []float64{10}, Subj: []float64{9}},
		{Name: "a figure whose name is longer than the usual column, ÷ another", Base: []float64{4, 2, 3}, Subj: []float64{1}},
	})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("report has %d lines, want header + 3:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"0.960   ≥0.95 met", "0.900   ≥0.95 MISSED", "0.333   report"} {
		if !strings.HasSuffix(lines[i+1], want) {
			t.Errorf("row %d = %q, want it to end with %q", i, lines[i+1], want)
		}
	}
	// Columns stay aligned when a name is longer than the default width.
	col := strings.Index(lines[0], "baseline")
	if got := strings.Index(lines[3], "3 (2–4)"); len([]rune(lines[3][:got])) != len([]rune(lines[0][:col])) {
		t.Errorf("long row's baseline column at rune %d, header's at %d:\n%s", len([]rune(lines[3][:got])), len([]rune(lines[0][:col])), buf.String())
	}
}

func TestPairedRatios(t *testing.T) {
	r := Row{Base: []float64{10, 20, 5}, Subj: []float64{9, 22, 5}}
	p := r.Paired()
	if p.Median != 1 || p.Min != 0.9 || p.Max != 1.1 || len(p.Samples) != 3 {
		t.Errorf("Paired = %+v, want median 1 (0.9–1.1) over 3 rounds", p)
	}
	if got := (Row{Base: []float64{0, 2}, Subj: []float64{1, 1}}).Paired(); len(got.Samples) != 1 || got.Median != 0.5 {
		t.Errorf("a zero baseline must be left out: %+v", got)
	}
}
