package compare

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// ParseJUnit counts the test cases of a JUnit report (ginkgo's
// --ginkgo.junit-report) whose names match focus (a regular expression, as
// --ginkgo.focus; ginkgo also lists the specs the focus left out, as
// skipped) by outcome.
func ParseJUnit(data []byte, focus string) (Suite, error) {
	re, err := regexp.Compile(focus)
	if err != nil {
		return Suite{}, fmt.Errorf("focus %q: %w", focus, err)
	}
	var doc struct {
		Suites []struct {
			Cases []struct {
				Name    string    `xml:"name,attr"`
				Status  string    `xml:"status,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
				Skipped *struct {
					Message string `xml:"message,attr"`
				} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		return Suite{}, fmt.Errorf("parsing the JUnit report: %w", err)
	}
	var s Suite
	for _, su := range doc.Suites {
		for _, c := range su.Cases {
			if !re.MatchString(c.Name) {
				continue
			}
			switch {
			case c.Status == "interrupted" || c.Status == "aborted" ||
				(c.Skipped != nil && strings.Contains(strings.ToLower(c.Skipped.Message), "interrupt")):
				s.NotRun++
			case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
				s.Skipped++
			case c.Failure != nil || c.Error != nil || c.Status == "failed" || c.Status == "panicked" || c.Status == "timedout":
				s.Failed++
				s.FailedNames = append(s.FailedNames, c.Name)
			default:
				if strings.HasPrefix(c.Name, "[SynchronizedBeforeSuite]") || strings.HasPrefix(c.Name, "[SynchronizedAfterSuite]") ||
					strings.HasPrefix(c.Name, "[ReportAfterSuite]") || strings.HasPrefix(c.Name, "[BeforeSuite]") || strings.HasPrefix(c.Name, "[AfterSuite]") {
					continue
				}
				s.Passed++
			}
		}
	}
	return s, nil
}

// verdictKeys are the field names a scenario's outcome may be reported in.
var verdictKeys = []string{"result", "status", "verdict", "outcome"}

// nameKeys are the field names a scenario's name may be reported in.
var nameKeys = []string{"name", "scenario", "test", "id"}

// ParseScenarios counts the scenarios in `trellisctl connectivity test -o
// json` output: every JSON object (at any depth, in one document or one per
// line) with a verdict field whose value is pass, fail or skip.
func ParseScenarios(data []byte) (Suite, error) {
	var s Suite
	found := false
	dec := json.NewDecoder(strings.NewReader(string(data)))
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			return s, fmt.Errorf("parsing the connectivity test's JSON: %w", err)
		}
		walk(v, func(m map[string]any) {
			for _, k := range verdictKeys {
				vs, ok := m[k].(string)
				if !ok {
					continue
				}
				switch strings.ToLower(vs) {
				case "pass", "passed", "ok", "success":
					s.Passed++
				case "fail", "failed", "failure", "error":
					s.Failed++
					s.FailedNames = append(s.FailedNames, nameOf(m))
				case "skip", "skipped":
					s.Skipped++
				default:
					continue
				}
				found = true
				return
			}
		})
	}
	if !found {
		return s, fmt.Errorf("no scenario verdicts in the connectivity test's JSON")
	}
	return s, nil
}

func nameOf(m map[string]any) string {
	for _, k := range nameKeys {
		if v, ok := m[k].(string); ok && v != "" {
			if r, ok := m["reason"].(string); ok && r != "" {
				return v + ": " + r
			}
			return v
		}
	}
	return "(unnamed scenario)"
}

func walk(v any, f func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(x)
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			walk(x[k], f)
		}
	case []any:
		for _, e := range x {
			walk(e, f)
		}
	}
}

// ParseBenchRatios collects the ratios in `trellisctl bench -o json`
// output: every numeric field whose name contains "ratio", named by the
// enclosing object's name field (or its JSON path) and, unless it is just
// "ratio", the field; objects marked skipped are left out.
func ParseBenchRatios(data []byte) (map[string]float64, error) {
	out := map[string]float64{}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("parsing the bench JSON: %w", err)
		}
		collectRatios(v, "", out)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ratios in the bench JSON")
	}
	return out, nil
}

func collectRatios(v any, path string, out map[string]float64) {
	switch x := v.(type) {
	case map[string]any:
		if sk, ok := x["skipped"].(string); ok && sk != "" {
			return // a figure the tool did not measure has no ratio
		}
		label := path
		for _, k := range nameKeys {
			if n, ok := x[k].(string); ok && n != "" {
				label = n
				break
			}
		}
		for k, e := range x {
			if f, ok := e.(float64); ok && strings.Contains(strings.ToLower(k), "ratio") {
				key := k
				switch {
				case label != "" && k == "ratio":
					key = label
				case label != "":
					key = label + " " + k
				}
				out[key] = f
				continue
			}
			sub := k
			if label != "" {
				sub = label + "." + k
			}
			collectRatios(e, sub, out)
		}
	case []any:
		for i, e := range x {
			collectRatios(e, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}
