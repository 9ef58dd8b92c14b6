package scaleplot

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/trellisnet/trellis/internal/scalebench"
)

// Size of every PNG.
const (
	width  = 16 * vg.Centimeter
	height = 10 * vg.Centimeter
)

var targetColor = color.RGBA{R: 200, A: 255}

// Write draws every figure of Figures that has at least one measured value
// into dir (created if missing) and returns the paths written, in order.
// Figures with no value at any step are skipped, and so are steps without
// pods (the x axis is logarithmic).
func Write(r *scalebench.Result, dir string) ([]string, error) {
	if r == nil {
		return nil, errors.New("no result")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	var written []string
	for _, f := range Figures() {
		p, ok, err := f.plot(r.Steps)
		if err != nil {
			return written, fmt.Errorf("figure %s: %w", f.File, err)
		}
		if !ok {
			continue
		}
		path := filepath.Join(dir, f.File)
		if err := p.Save(width, height, path); err != nil {
			return written, fmt.Errorf("write %s: %w", path, err)
		}
		written = append(written, path)
	}
	return written, nil
}

// plot builds the figure's plot from steps; false when no step measured
// any of its series.
func (f Figure) plot(steps []scalebench.Step) (*plot.Plot, bool, error) {
	p := plot.New()
	p.Title.Text = f.Title
	if f.WithPolicies {
		p.Title.Text += policyCount(steps)
	}
	p.X.Label.Text = "pods (nodes), log scale"
	p.Y.Label.Text = f.YLabel
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = stepTicks(steps)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(9)

	yMax, first, measured := 0.0, math.NaN(), false
	for i, s := range f.Series {
		xys := points(steps, s.Value)
		if len(xys) == 0 {
			continue
		}
		measured = true
		if math.IsNaN(first) {
			first = xys[0].Y
		}
		for _, xy := range xys {
			yMax = math.Max(yMax, xy.Y)
		}
		line, marks, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, false, err
		}
		line.Color = plotutil.Color(i)
		marks.Color = plotutil.Color(i)
		marks.Shape = plotutil.Shape(i)
		p.Add(line, marks)
		p.Legend.Add(s.Name, line, marks)
	}
	if !measured {
		return nil, false, nil
	}

	xMin, xMax := xRange(steps)
	target := f.Target.Value
	if f.Target.FromFirst {
		target = first
	}
	tl, err := plotter.NewLine(plotter.XYs{{X: xMin, Y: target}, {X: xMax, Y: target}})
	if err != nil {
		return nil, false, err
	}
	tl.Color = targetColor
	tl.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	tl.Width = vg.Points(1.5)
	p.Add(tl)
	p.Legend.Add(f.Target.Label, tl)

	p.X.Min, p.X.Max = xMin, xMax
	p.Y.Min = 0
	// Room above the highest value or target for the legend, one line
	// per entry.
	p.Y.Max = (1.2 + 0.12*float64(len(f.Series)+1)) * math.Max(yMax, target)
	if p.Y.Max == 0 {
		p.Y.Max = 1
	}
	p.Add(plotter.NewGrid())
	return p, true, nil
}

// points are the steps' (pods, value) pairs where value is measured.
func points(steps []scalebench.Step, value func(*scalebench.Step) *float64) plotter.XYs {
	var xys plotter.XYs
	for i := range steps {
		v := value(&steps[i])
		if steps[i].Pods <= 0 || v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) {
			continue
		}
		xys = append(xys, plotter.XY{X: float64(steps[i].Pods), Y: *v})
	}
	return xys
}

// xRange spans the steps' pod counts with a margin either side (a factor,
// the axis being logarithmic), so that a single step still has a width.
func xRange(steps []scalebench.Step) (float64, float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range steps {
		if s.Pods <= 0 {
			continue
		}
		lo, hi = math.Min(lo, float64(s.Pods)), math.Max(hi, float64(s.Pods))
	}
	return lo / 1.5, hi * 1.5
}

// stepTicks marks each step on the x axis with its pods and nodes.
func stepTicks(steps []scalebench.Step) plot.Ticker {
	var ts plot.ConstantTicks
	for _, s := range steps {
		if s.Pods <= 0 {
			continue
		}
		ts = append(ts, plot.Tick{Value: float64(s.Pods),
			Label: thousands(s.Pods) + "\n(" + thousands(s.Nodes) + " nodes)"})
	}
	return ts
}

// policyCount is ", N policies" (or ", N–M policies" when the steps
// differ), empty when no step has any.
func policyCount(steps []scalebench.Step) string {
	lo, hi := math.MaxInt, 0
	for _, s := range steps {
		if s.Pods > 0 && s.Policies > 0 {
			lo, hi = min(lo, s.Policies), max(hi, s.Policies)
		}
	}
	switch {
	case hi == 0:
		return ""
	case lo == hi:
		return ", " + thousands(lo) + " policies"
	default:
		return ", " + thousands(lo) + "–" + thousands(hi) + " policies"
	}
}

// thousands formats n with a comma every three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := false
	if n < 0 {
		neg, s = true, s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
