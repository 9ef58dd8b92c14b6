package agent

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
)

// referenceWork is a fixed piece of work of the same kind as a resync
// (strings, maps, slices, sorting, allocation; about 15 ms on the
// project's machine) that no change to the agent alters. The scale guard
// times it beside each resync and compares their ratio with the
// baseline's: a machine that is busier, or slower, than the one the
// baseline was recorded on slows both alike.
func referenceWork() int {
	byNamespace := map[string][]netip.Addr{}
	labels := map[string]map[string]string{}
	for i := range 20000 {
		ns := "ns" + strconv.Itoa(i%100)
		name := ns + "/pod-" + strconv.Itoa(i)
		byNamespace[ns] = append(byNamespace[ns], netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		labels[name] = map[string]string{"app": "app" + strconv.Itoa(i%20), "tier": "tier" + strconv.Itoa(i%3)}
	}
	n := 0
	for _, ns := range slices.Sorted(maps.Keys(byNamespace)) {
		addrs := byNamespace[ns]
		slices.SortFunc(addrs, func(a, b netip.Addr) int { return b.Compare(a) })
		for _, a := range addrs {
			n += len(a.String())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(labels)) {
		if labels[name]["tier"] == "tier0" {
			n++
		}
	}
	return n
}
