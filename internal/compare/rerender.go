package compare

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Rerender reads a run's results.json from its log directory dir and
// counts each lab's NetworkPolicy specs again from its JUnit report (focus
// as in the run), so a report can be written again without a lab. The
// start time comes from the directory's name (compare-YYYYMMDD-HHMMSS).
func Rerender(dir, focus string) ([]Result, time.Time, error) {
	data, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("reading the run's results: %w", err)
	}
	var results []Result
	if err := json.Unmarshal(data, &results); err != nil {
		return nil, time.Time{}, fmt.Errorf("parsing %s/results.json: %w", dir, err)
	}
	for i, r := range results {
		junit, err := os.ReadFile(filepath.Join(dir, r.CNI+"-netpol", "junit.xml"))
		if err != nil {
			continue
		}
		s, err := ParseJUnit(junit, focus)
		if err != nil {
			return nil, time.Time{}, err
		}
		s.Took, s.Error = r.Netpol.Took, r.Netpol.Error
		results[i].Netpol = s
	}
	start, err := time.Parse("20060102-150405", strings.TrimPrefix(filepath.Base(dir), "compare-"))
	if err != nil {
		start = time.Now().UTC()
	}
	return results, start, nil
}
