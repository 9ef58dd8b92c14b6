package nfttrace

import (
	"fmt"
	"strings"

	"sigs.k8s.io/knftables"
)

// Validate checks what knftables.Fake accepts but the kernel would refuse:
// overlapping elements in an interval set (nft rejects them), ranges in a
// set without the interval flag, and elements that do not parse as their
// set's type. Call it after every Run in tests.
func Validate(fake *knftables.Fake) error {
	fake.RLock()
	defer fake.RUnlock()
	for _, nt := range tables(fake) {
		for _, sname := range sortedKeys(nt.table.Sets) {
			if err := validateSet(nt.table.Sets[sname]); err != nil {
				return fmt.Errorf("table %s set %s: %w", nt.name, sname, err)
			}
		}
	}
	return nil
}

type box struct{ lo, hi []num }

func validateSet(s *knftables.FakeSet) error {
	types := strings.Split(s.Type, " . ")
	interval := false
	for _, f := range s.Flags {
		interval = interval || f == knftables.IntervalFlag
	}
	seen := map[string]bool{}
	var boxes []box
	for _, e := range s.Elements {
		if len(e.Key) != len(types) {
			return fmt.Errorf("element %q: %d fields for type %q", e.Key, len(e.Key), s.Type)
		}
		k := strings.Join(e.Key, " . ")
		if seen[k] {
			return fmt.Errorf("duplicate element %q", k)
		}
		seen[k] = true
		var b box
		for i, typ := range types {
			if typ == "ifname" {
				b.lo, b.hi = nil, nil // string fields: only exact duplicates matter
				break
			}
			lo, hi, err := parseField(typ, e.Key[i])
			if err != nil {
				return fmt.Errorf("element %q: %w", k, err)
			}
			if lo != hi && !interval {
				return fmt.Errorf("element %q: range without interval flag", k)
			}
			b.lo, b.hi = append(b.lo, lo), append(b.hi, hi)
		}
		if interval && b.lo != nil {
			for _, o := range boxes {
				if overlaps(o, b) {
					return fmt.Errorf("element %q overlaps another element", k)
				}
			}
			boxes = append(boxes, b)
		}
	}
	return nil
}

func overlaps(a, b box) bool {
	for i := range a.lo {
		if a.hi[i].cmp(b.lo[i]) < 0 || b.hi[i].cmp(a.lo[i]) < 0 {
			return false
		}
	}
	return true
}
