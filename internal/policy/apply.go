package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// ApplyStats describes what one Apply changed.
type ApplyStats struct {
	// Operations is the number of operations in the transaction.
	Operations int
	// ElementsAdded and ElementsDeleted count set and map element changes.
	ElementsAdded, ElementsDeleted int
	// ChainsCreated and ObjectsDeleted count group chains created and stale
	// chains/sets/maps deleted.
	ChainsCreated, ObjectsDeleted int
	// Commit is the time nftables took to run the transaction (the rest
	// of ApplyWith is reading the table and building the transaction).
	Commit time.Duration
}

// existing is what the table holds before the sync.
type existing struct {
	chains, sets, maps, counters map[string]bool
}

// Apply makes the table hold exactly d, in one transaction, without flushing
// the table or any set: it adds what is missing, deletes what is stale and
// rewrites only the static chains (atomically, inside the transaction). nft
// must be bound to the inet family and TableName.
func Apply(ctx context.Context, nft knftables.Interface, d *Desired) (ApplyStats, error) {
	return ApplyWith(ctx, nft, d, ApplyOptions{})
}

// ApplyOptions tune ApplyWith.
type ApplyOptions struct {
	// TrustGroupSets skips reading back the element count of the group
	// sets that already exist (one nft call each) when Previous is set:
	// they are then diffed against Previous alone, so only drift made by
	// someone else goes unnoticed; the controller verifies them on its
	// first sync and then periodically. Without Previous, existing group
	// sets are rewritten whatever this says.
	TrustGroupSets bool
	// Previous, when set, is the Desired that the last successful Apply
	// committed to this table: the objects it holds and the elements of
	// the other sets and maps are then taken from it instead of being read
	// back (about ten nft calls per sync, one of them listing every pod
	// address of the cluster). Same trade as TrustGroupSets: a change made
	// by someone else is repaired by the next sync without it.
	Previous *Desired
	// ReadBack, with Previous, still reads the table's objects and the
	// elements of every set and map but the group sets back from the
	// kernel (drift repair); Previous then serves the group sets only.
	ReadBack bool
	// Rewrite replaces the whole table in the transaction (add, delete and
	// add it again, then everything d holds), reading nothing back and
	// trusting nothing: the way to repair a change made by someone else.
	// The transaction is atomic, so packets see the old table or the new
	// one, never none; only the named counters restart from zero.
	Rewrite bool
}

// ApplyWith is Apply with options.
func ApplyWith(ctx context.Context, nft knftables.Interface, d *Desired, opts ApplyOptions) (ApplyStats, error) {
	var st ApplyStats
	var ex *existing
	var err error
	table := &knftables.Table{Comment: knftables.PtrTo(tableComment)}
	tx := nft.NewTransaction()
	switch {
	case opts.Rewrite:
		ex = existingFrom(&Desired{})
		opts.Previous, opts.TrustGroupSets = nil, false
		tx.Add(table)
		tx.Delete(&knftables.Table{})
	case opts.Previous != nil && !opts.ReadBack:
		ex = existingFrom(opts.Previous)
	default:
		if ex, err = listExisting(ctx, nft); err != nil {
			return st, err
		}
	}
	tx.Add(table)
	for _, name := range sortedKeys(d.Sets) {
		s := d.Sets[name]
		obj := &knftables.Set{Name: name, Type: s.Type}
		if s.Interval {
			obj.Flags = []knftables.SetFlag{knftables.IntervalFlag}
		}
		tx.Add(obj)
	}
	for _, name := range sortedKeys(d.Maps) {
		tx.Add(&knftables.Map{Name: name, Type: d.Maps[name].Type})
	}
	for _, name := range sortedKeys(d.Counters) {
		if !ex.counters[name] {
			tx.Add(&knftables.Counter{Name: name})
		}
	}
	writeChains(tx, d, ex, &st)
	if err := diffElements(ctx, nft, tx, d, ex, opts, &st); err != nil {
		return st, err
	}
	deleteStale(tx, d, ex, &st)
	st.Operations = tx.NumOperations()
	start := time.Now()
	err = nft.Run(ctx, tx)
	st.Commit = time.Since(start)
	if err != nil {
		return st, fmt.Errorf("apply policy table (%d operations): %w", st.Operations, err)
	}
	return st, nil
}

// existingFrom is what the table holds after prev was applied.
func existingFrom(prev *Desired) *existing {
	ex := &existing{chains: map[string]bool{}, sets: map[string]bool{}, maps: map[string]bool{}, counters: map[string]bool{}}
	for name := range prev.Chains {
		ex.chains[name] = true
	}
	for name := range prev.Sets {
		ex.sets[name] = true
	}
	for name := range prev.Maps {
		ex.maps[name] = true
	}
	for name := range prev.Counters {
		ex.counters[name] = true
	}
	return ex
}

func listExisting(ctx context.Context, nft knftables.Interface) (*existing, error) {
	ex := &existing{chains: map[string]bool{}, sets: map[string]bool{}, maps: map[string]bool{}, counters: map[string]bool{}}
	for kind, dst := range map[string]map[string]bool{"chain": ex.chains, "set": ex.sets, "map": ex.maps, "counter": ex.counters} {
		names, err := nft.List(ctx, kind)
		if knftables.IsNotFound(err) {
			return ex, nil // no table yet
		}
		if err != nil {
			return nil, fmt.Errorf("list %ss of table %s: %w", kind, TableName, err)
		}
		for _, n := range names {
			dst[n] = true
		}
	}
	return ex, nil
}

func writeChains(tx *knftables.Transaction, d *Desired, ex *existing, st *ApplyStats) {
	names := sortedKeys(d.Chains)
	for _, name := range names {
		c := d.Chains[name]
		obj := &knftables.Chain{Name: name}
		if c.Hook != "" {
			obj.Type = knftables.PtrTo(knftables.FilterType)
			obj.Hook = knftables.PtrTo(knftables.BaseChainHook(c.Hook))
			obj.Priority = knftables.PtrTo(knftables.FilterPriority)
			obj.Policy = knftables.PtrTo(knftables.AcceptPolicy)
		}
		tx.Add(obj)
	}
	for _, name := range names {
		c := d.Chains[name]
		switch {
		case c.Static:
			if ex.chains[name] {
				tx.Flush(&knftables.Chain{Name: name})
			}
		case ex.chains[name]:
			continue // content-addressed: already holds these rules
		default:
			st.ChainsCreated++
		}
		for _, r := range c.Rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
}

// elementKey is the comparable form of an element key: fields joined by
// " . ", quotes dropped (nft lists ifname values without them).
func elementKey(fields []string) string {
	return strings.ReplaceAll(strings.Join(fields, " . "), `"`, "")
}

// canonicalDevgroups rewrites the symbolic name nft lists for device group
// 0 ("default", from /etc/iproute2/group) to the number the compiler emits.
func canonicalDevgroups(setType string, key []string) []string {
	if setType != "devgroup" || len(key) != 1 || key[0] != "default" {
		return key
	}
	return []string{"0"}
}

func diffElements(ctx context.Context, nft knftables.Interface, tx *knftables.Transaction,
	d *Desired, ex *existing, opts ApplyOptions, st *ApplyStats) error {
	fromPrevious := opts.Previous != nil && !opts.ReadBack
	for _, name := range sortedKeys(d.Sets) {
		s := d.Sets[name]
		var prev *Set
		if opts.Previous != nil {
			prev = opts.Previous.Sets[name]
		}
		if s.Group {
			if err := diffGroupSet(ctx, nft, tx, name, s, prev, ex, opts, st); err != nil {
				return err
			}
			continue
		}
		if fromPrevious && prev == s {
			continue // the compiler reused the set: nothing changed
		}
		if fromPrevious && prev != nil && s.delta != nil && s.delta.base == prev {
			for _, k := range s.delta.del {
				tx.Delete(&knftables.Element{Set: name, Key: k})
				st.ElementsDeleted++
			}
			for _, k := range s.delta.add {
				tx.Add(&knftables.Element{Set: name, Key: k})
				st.ElementsAdded++
			}
			continue
		}
		have := map[string][]string{}
		if fromPrevious && prev != nil {
			for _, k := range prev.Elements {
				have[elementKey(k)] = k
			}
		} else if ex.sets[name] {
			elems, err := nft.ListElements(ctx, "set", name)
			if err != nil {
				return fmt.Errorf("list elements of set %s: %w", name, err)
			}
			for _, e := range elems {
				have[elementKey(canonicalDevgroups(s.Type, e.Key))] = e.Key
			}
		}
		want := make(map[string]bool, len(s.Elements))
		for _, k := range s.Elements {
			ks := elementKey(k)
			want[ks] = true
			if _, ok := have[ks]; !ok {
				tx.Add(&knftables.Element{Set: name, Key: k})
				st.ElementsAdded++
			}
		}
		for _, ks := range sortedKeys(have) {
			if !want[ks] {
				tx.Delete(&knftables.Element{Set: name, Key: have[ks]})
				st.ElementsDeleted++
			}
		}
	}
	for _, name := range sortedKeys(d.Maps) {
		type kv struct {
			key   []string
			value string
		}
		have := map[string]kv{}
		if prev := opts.Previous; fromPrevious && prev.Maps[name] != nil {
			for _, e := range prev.Maps[name].Elements {
				have[elementKey(e.Key)] = kv{e.Key, e.Value}
			}
		} else if ex.maps[name] {
			elems, err := nft.ListElements(ctx, "map", name)
			if err != nil {
				return fmt.Errorf("list elements of map %s: %w", name, err)
			}
			for _, e := range elems {
				have[elementKey(e.Key)] = kv{e.Key, strings.Join(e.Value, " ")}
			}
		}
		want := map[string]bool{}
		for _, e := range d.Maps[name].Elements {
			ks := elementKey(e.Key)
			want[ks] = true
			old, ok := have[ks]
			if ok && old.value == e.Value {
				continue
			}
			if ok {
				tx.Delete(&knftables.Element{Map: name, Key: old.key})
				st.ElementsDeleted++
			}
			tx.Add(&knftables.Element{Map: name, Key: e.Key, Value: []string{e.Value}})
			st.ElementsAdded++
		}
		for _, ks := range sortedKeys(have) {
			if !want[ks] {
				tx.Delete(&knftables.Element{Map: name, Key: have[ks].key})
				st.ElementsDeleted++
			}
		}
	}
	return nil
}

// diffGroupSet writes a group set: all of it when it is new; only the
// changed elements when the kernel holds prev (the Desired last committed;
// with verification, its element count is checked first); and, when prev
// is unknown or the count shows someone else changed it, all of it again
// after a flush, atomically inside the transaction.
func diffGroupSet(ctx context.Context, nft knftables.Interface, tx *knftables.Transaction,
	name string, s, prev *Set, ex *existing, opts ApplyOptions, st *ApplyStats) error {
	fill := func() {
		for _, k := range s.Elements {
			tx.Add(&knftables.Element{Set: name, Key: k})
			st.ElementsAdded++
		}
	}
	if !ex.sets[name] {
		fill()
		return nil
	}
	if prev != nil && !opts.TrustGroupSets {
		elems, err := nft.ListElements(ctx, "set", name)
		if err != nil {
			return fmt.Errorf("list elements of set %s: %w", name, err)
		}
		if len(elems) != len(prev.Elements) {
			prev = nil
		}
	}
	if prev == nil {
		tx.Flush(&knftables.Set{Name: name})
		st.ElementsDeleted++
		fill()
		return nil
	}
	if prev == s {
		return nil
	}
	if s.delta != nil && s.delta.base == prev {
		for _, k := range s.delta.del {
			tx.Delete(&knftables.Element{Set: name, Key: k})
			st.ElementsDeleted++
		}
		for _, k := range s.delta.add {
			tx.Add(&knftables.Element{Set: name, Key: k})
			st.ElementsAdded++
		}
		return nil
	}
	want := make(map[string]bool, len(s.Elements))
	for _, k := range s.Elements {
		want[elementKey(k)] = true
	}
	have := make(map[string]bool, len(prev.Elements))
	// Deletes first: a range may be replaced by one overlapping it.
	for _, k := range prev.Elements {
		ks := elementKey(k)
		have[ks] = true
		if !want[ks] {
			tx.Delete(&knftables.Element{Set: name, Key: k})
			st.ElementsDeleted++
		}
	}
	for _, k := range s.Elements {
		if !have[elementKey(k)] {
			tx.Add(&knftables.Element{Set: name, Key: k})
			st.ElementsAdded++
		}
	}
	return nil
}

// deleteStale removes chains, then sets, maps and counters, that the table holds but
// d does not. Map entries pointing at stale chains were already deleted by
// diffElements; flushing stale chains first drops their set references.
func deleteStale(tx *knftables.Transaction, d *Desired, ex *existing, st *ApplyStats) {
	var stale []string
	for _, name := range sortedKeys(ex.chains) {
		if _, ok := d.Chains[name]; !ok {
			stale = append(stale, name)
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	for _, name := range stale {
		tx.Delete(&knftables.Chain{Name: name})
		st.ObjectsDeleted++
	}
	for _, name := range sortedKeys(ex.sets) {
		if _, ok := d.Sets[name]; !ok {
			tx.Delete(&knftables.Set{Name: name})
			st.ObjectsDeleted++
		}
	}
	for _, name := range sortedKeys(ex.maps) {
		if _, ok := d.Maps[name]; !ok {
			tx.Delete(&knftables.Map{Name: name})
			st.ObjectsDeleted++
		}
	}
	for _, name := range sortedKeys(ex.counters) {
		if !d.Counters[name] {
			tx.Delete(&knftables.Counter{Name: name})
			st.ObjectsDeleted++
		}
	}
}

// tableComment is the policy table's comment.
const tableComment = "Trellis NetworkPolicy (managed by trellis-agent)"

// Remove deletes the policy table if it exists (enforcement disabled). nft
// must be bound to the inet family and TableName.
func Remove(ctx context.Context, nft knftables.Interface) error {
	if _, err := nft.List(ctx, "chain"); knftables.IsNotFound(err) {
		return nil
	}
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("remove policy table: %w", err)
	}
	return nil
}
