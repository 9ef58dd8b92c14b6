package policy

import (
	"regexp"
	"slices"
	"strings"
)

// GuardLive reports whether the table guard's watch runs (tests).
func (c *Controller) GuardLive() bool {
	if c.guard == nil {
		return false
	}
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	return c.guard.live
}

// PodEvent tells c what its pod informer's event handler would: obj was
// added, updated or deleted (tests that change an informer's indexer
// directly, without running the informer).
func (c *Controller) PodEvent(obj any) { c.podChanged(obj) }

// CanonicalGroupNames replaces, in a table's dump, every group's name by
// one made of its direction and the interfaces of its pods: the Compiler
// names a group after the group its pods were in before (nameGroups), so
// its table equals Compile's up to the groups' names.
func CanonicalGroupNames(dump string) string {
	members := map[string][]string{}
	for _, m := range groupMember.FindAllStringSubmatch(dump, -1) {
		members[m[2]] = append(members[m[2]], m[1])
	}
	return groupNameRE.ReplaceAllStringFunc(dump, func(name string) string {
		ifaces := slices.Clone(members[name])
		if len(ifaces) == 0 {
			return name
		}
		slices.Sort(ifaces)
		prefix, _, _ := strings.Cut(name, "-")
		return prefix + "[" + strings.Join(ifaces, ",") + "]"
	})
}

var (
	groupNameRE = regexp.MustCompile(`\b(?:ing|eg)-[0-9a-f]{16}\b`)
	groupMember = regexp.MustCompile(`"(trl[0-9a-zA-Z]+)" : goto ((?:ing|eg)-[0-9a-f]{16})`)
)
