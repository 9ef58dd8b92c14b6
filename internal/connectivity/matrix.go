// Package connectivity answers which pods reach which. A Prober connects from
// one pod to a target; ProbeAll fills an all-pairs truth table (Matrix) and
// Expect compares it with an expectation, in the style of the upstream
// Kubernetes NetworkPolicy e2e suite. The package knows nothing of how pods
// are reached: ExecProber runs agnhost's connect in the source pod through
// the API server (any cluster); the lab's prober (internal/lab/probe) dials
// from inside the pod's network namespace.
package connectivity

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Matrix is a connectivity truth table: Cells[from][to] is true when from
// reached to. Pods are NS/POD names.
type Matrix struct {
	Pods  []string
	Cells map[string]map[string]bool
}

// NewMatrix returns a matrix over pods with every cell set to v.
func NewMatrix(pods []string, v bool) *Matrix {
	m := &Matrix{Pods: pods, Cells: map[string]map[string]bool{}}
	for _, a := range pods {
		m.Cells[a] = map[string]bool{}
		for _, b := range pods {
			m.Cells[a][b] = v
		}
	}
	return m
}

// Set sets one cell.
func (m *Matrix) Set(from, to string, v bool) { m.Cells[from][to] = v }

// Diff counts the cells where m and other differ.
func (m *Matrix) Diff(other *Matrix) int {
	n := 0
	for _, a := range m.Pods {
		for _, b := range m.Pods {
			if m.Cells[a][b] != other.Cells[a][b] {
				n++
			}
		}
	}
	return n
}

// Print writes the table in the upstream netpol suite's style: '.' reached,
// 'X' not reached; with expected given, a wrong cell is marked '!'.
func (m *Matrix) Print(w io.Writer, expected *Matrix) {
	tw := tabwriter.NewWriter(w, 1, 4, 1, ' ', 0)
	fmt.Fprint(tw, "from\\to")
	for _, b := range m.Pods {
		fmt.Fprintf(tw, "\t%s", b)
	}
	fmt.Fprintln(tw)
	for _, a := range m.Pods {
		fmt.Fprint(tw, a)
		for _, b := range m.Pods {
			c := "X"
			if m.Cells[a][b] {
				c = "."
			}
			if expected != nil && expected.Cells[a][b] != m.Cells[a][b] {
				c += "!"
			}
			fmt.Fprintf(tw, "\t%s", c)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// Report renders expected, observed and the comparison, for test failures.
func Report(expected, observed *Matrix) string {
	var b strings.Builder
	fmt.Fprintln(&b, "expected:")
	expected.Print(&b, nil)
	fmt.Fprintln(&b, "observed (! = differs from expected):")
	observed.Print(&b, expected)
	fmt.Fprintf(&b, "%d of %d cells wrong\n", expected.Diff(observed), len(expected.Pods)*len(expected.Pods))
	return b.String()
}
