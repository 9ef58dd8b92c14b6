//go:build e2e

package perpacket

import (
	"slices"
	"testing"

	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/internal/scalebench"
)

func TestABBAOrder(t *testing.T) {
	var got []int
	abba(3, func(i int) { got = append(got, i) })
	if want := []int{0, 1, 1, 0, 0, 1}; !slices.Equal(got, want) {
		t.Errorf("abba(3) ran %v, want %v", got, want)
	}
	got = nil
	abba(0, func(i int) { got = append(got, i) })
	if want := []int{0, 1}; !slices.Equal(got, want) {
		t.Errorf("abba(0) ran %v, want each side once: %v", got, want)
	}
}

func TestResultVerdictsAndFill(t *testing.T) {
	r := Result{Throughput: dpbench.Summarise([]float64{0.96, 0.98, 1.0}), ConnRate: dpbench.Summarise([]float64{0.9, 0.94, 1.2})}
	tput, conn := r.Verdicts()
	if !tput || conn {
		t.Errorf("verdicts throughput %v connection rate %v, want met (0.98 ≥ 0.97) and missed (0.94 < 0.95)", tput, conn)
	}
	var s scalebench.Step
	r.Fill(&s)
	if s.PerPacketRounds != 3 || s.ThroughputRatio == nil || *s.ThroughputRatio != (scalebench.Spread{Median: 0.98, Min: 0.96, Max: 1.0}) ||
		s.ConnRateRatio == nil || *s.ConnRateRatio != (scalebench.Spread{Median: 0.94, Min: 0.9, Max: 1.2}) {
		t.Errorf("Fill gave rounds %d, throughput %+v, connection rate %+v", s.PerPacketRounds, s.ThroughputRatio, s.ConnRateRatio)
	}
}
