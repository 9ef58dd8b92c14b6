package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/client-go/tools/record"
)

// A problem is reported once (one Event) while it stays the same, keeps
// readiness failing and the metric at 1, and clears to 0.
func TestProblems(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec := record.NewFakeRecorder(10)
	p, err := newProblems(reg, rec, "node1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Check(); err != nil {
		t.Fatalf("no problem: Check = %v", err)
	}
	p.Report(ctx, "MissingCapability", "the agent lacks CAP_BPF")
	p.Report(ctx, "MissingCapability", "the agent lacks CAP_BPF")
	if n := len(rec.Events); n != 1 {
		t.Fatalf("%d events for one problem, want 1", n)
	}
	if ev := <-rec.Events; !strings.Contains(ev, "Warning MissingCapability the agent lacks CAP_BPF") {
		t.Errorf("event %q", ev)
	}
	if err := p.Check(); err == nil || !strings.Contains(err.Error(), "CAP_BPF") {
		t.Errorf("Check = %v", err)
	}
	if v := gaugeValue(t, p); v != 1 {
		t.Errorf("metric %v, want 1", v)
	}
	p.Clear("MissingCapability")
	if err := p.Check(); err != nil {
		t.Errorf("after Clear: Check = %v", err)
	}
	if v := gaugeValue(t, p); v != 0 {
		t.Errorf("metric after Clear %v, want 0", v)
	}
}

func gaugeValue(t *testing.T, p *problems) float64 {
	t.Helper()
	var m dto.Metric
	if err := p.gauge.WithLabelValues("MissingCapability").Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
