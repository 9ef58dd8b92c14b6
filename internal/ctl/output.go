package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Output formats of -o, as kubectl names them. "" is the default table.
const (
	OutputTable = ""
	OutputWide  = "wide"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// ValidateOutput rejects an -o value the command does not support.
func ValidateOutput(o string, allowed ...string) error {
	for _, a := range append([]string{OutputTable}, allowed...) {
		if o == a {
			return nil
		}
	}
	return Usage("unknown output format %q (one of: %s)", o, strings.Join(allowed, ", "))
}

// PrintStructured writes v as JSON or YAML.
func PrintStructured(w io.Writer, format string, v any) error {
	switch format {
	case OutputJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case OutputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("PrintStructured: format %q is not structured", format)
}

// Table writes aligned columns, kubectl style (upper-case headers, at
// least three spaces between columns).
type Table struct {
	tw *tabwriter.Writer
}

// NewTable starts a table on w with the given headers.
func NewTable(w io.Writer, headers ...string) *Table {
	t := &Table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.Row(headers...)
	return t
}

// Row adds one row; an empty cell is shown as "-".
func (t *Table) Row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// Flush writes the table out.
func (t *Table) Flush() error { return t.tw.Flush() }
