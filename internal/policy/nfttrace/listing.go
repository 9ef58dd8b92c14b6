package nfttrace

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"sigs.k8s.io/knftables"
)

// FromListing loads the text of `nft list table FAMILY NAME` (a live
// kernel's table) into a knftables.Fake, so Trace can walk the ruleset the
// kernel holds. It reads the objects internal/policy emits — base and
// regular chains, sets and maps (elements included), named counters — and
// fails on any line it does not understand rather than skip it. Counter
// values are dropped ("counter packets 1 bytes 2" becomes "counter").
func FromListing(family knftables.Family, table, listing string) (*knftables.Fake, error) {
	p := &listingParser{lines: splitLines(listing)}
	fake := knftables.NewFake(family, table)
	objs, rules, err := p.table(family, table)
	if err != nil {
		return nil, err
	}
	tx := fake.NewTransaction()
	tx.Add(&knftables.Table{})
	for _, o := range objs {
		tx.Add(o)
	}
	for _, o := range rules {
		tx.Add(o)
	}
	if err := fake.Run(context.Background(), tx); err != nil {
		return nil, fmt.Errorf("load the listing into a fake table: %w", err)
	}
	return fake, nil
}

type listingParser struct {
	lines []string
	i     int
}

func splitLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func (p *listingParser) next() (string, bool) {
	if p.i >= len(p.lines) {
		return "", false
	}
	l := p.lines[p.i]
	p.i++
	return l, true
}

// table parses the whole listing: objects (chains, sets, maps, counters)
// and, separately, what refers to them (rules, elements).
func (p *listingParser) table(family knftables.Family, name string) ([]knftables.Object, []knftables.Object, error) {
	head, ok := p.next()
	if want := fmt.Sprintf("table %s %s {", family, name); !ok || head != want {
		return nil, nil, fmt.Errorf("listing starts with %q, want %q", head, want)
	}
	var objs, refs []knftables.Object
	for {
		l, ok := p.next()
		if !ok {
			return nil, nil, fmt.Errorf("listing ends inside the table")
		}
		kind, rest, _ := strings.Cut(l, " ")
		oname := strings.TrimSuffix(strings.TrimSpace(rest), " {")
		var err error
		switch {
		case l == "}":
			return objs, refs, nil
		case kind == "comment" || kind == "flags":
			continue // table attributes
		case kind == "counter":
			objs = append(objs, &knftables.Counter{Name: oname})
			err = p.skipBlock()
		case kind == "chain":
			var c *knftables.Chain
			var rs []knftables.Object
			c, rs, err = p.chain(oname)
			objs, refs = append(objs, c), append(refs, rs...)
		case kind == "set" || kind == "map":
			var o knftables.Object
			var es []knftables.Object
			o, es, err = p.setOrMap(kind, oname)
			objs, refs = append(objs, o), append(refs, es...)
		default:
			err = fmt.Errorf("unknown table member %q", l)
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

func (p *listingParser) skipBlock() error {
	for {
		l, ok := p.next()
		if !ok {
			return fmt.Errorf("listing ends inside a block")
		}
		if l == "}" {
			return nil
		}
	}
}

var baseChainRE = regexp.MustCompile(`^type (\w+) hook (\w+) priority ([\w+-]+); policy (\w+);$`)

// counterValues is what nft prints after an anonymous counter.
var counterValues = regexp.MustCompile(`\bcounter packets \d+ bytes \d+`)

func (p *listingParser) chain(name string) (*knftables.Chain, []knftables.Object, error) {
	c := &knftables.Chain{Name: name}
	var rules []knftables.Object
	for {
		l, ok := p.next()
		if !ok {
			return nil, nil, fmt.Errorf("listing ends inside chain %s", name)
		}
		if l == "}" {
			return c, rules, nil
		}
		if m := baseChainRE.FindStringSubmatch(l); m != nil {
			typ, hook, prio := knftables.BaseChainType(m[1]), knftables.BaseChainHook(m[2]), knftables.BaseChainPriority(m[3])
			pol := knftables.BaseChainPolicy(m[4])
			c.Type, c.Hook, c.Priority, c.Policy = &typ, &hook, &prio, &pol
			continue
		}
		if strings.HasPrefix(l, "comment ") {
			continue
		}
		rules = append(rules, &knftables.Rule{Chain: name, Rule: counterValues.ReplaceAllString(l, "counter")})
	}
}

func (p *listingParser) setOrMap(kind, name string) (knftables.Object, []knftables.Object, error) {
	var typ, elems string
	var flags []knftables.SetFlag
	for {
		l, ok := p.next()
		if !ok {
			return nil, nil, fmt.Errorf("listing ends inside %s %s", kind, name)
		}
		switch {
		case l == "}":
			return p.setObjects(kind, name, typ, flags, elems)
		case strings.HasPrefix(l, "type "):
			typ = strings.TrimPrefix(l, "type ")
		case strings.HasPrefix(l, "flags "):
			for _, f := range strings.Split(strings.TrimPrefix(l, "flags "), ",") {
				flags = append(flags, knftables.SetFlag(strings.TrimSpace(f)))
			}
		case strings.HasPrefix(l, "auto-merge"), strings.HasPrefix(l, "comment "):
		case strings.HasPrefix(l, "elements = {"):
			elems = strings.TrimPrefix(l, "elements = {")
			for !strings.HasSuffix(elems, "}") {
				more, ok := p.next()
				if !ok {
					return nil, nil, fmt.Errorf("listing ends inside the elements of %s", name)
				}
				elems += " " + more
			}
			elems = strings.TrimSuffix(elems, "}")
		default:
			return nil, nil, fmt.Errorf("%s %s: unknown line %q", kind, name, l)
		}
	}
}

func (p *listingParser) setObjects(kind, name, typ string, flags []knftables.SetFlag, elems string) (knftables.Object, []knftables.Object, error) {
	var out []knftables.Object
	keyType, _, _ := strings.Cut(typ, " : ")
	fieldTypes := splitConcat(keyType)
	for _, e := range strings.Split(elems, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		if kind == "set" {
			out = append(out, &knftables.Element{Set: name, Key: unquoteNames(fieldTypes, splitConcat(e))})
			continue
		}
		k, v, ok := strings.Cut(e, " : ")
		if !ok {
			return nil, nil, fmt.Errorf("map %s: element %q has no value", name, e)
		}
		out = append(out, &knftables.Element{Map: name, Key: unquoteNames(fieldTypes, splitConcat(k)), Value: []string{strings.TrimSpace(v)}})
	}
	if kind == "set" {
		return &knftables.Set{Name: name, Type: typ, Flags: flags}, out, nil
	}
	return &knftables.Map{Name: name, Type: typ, Flags: flags}, out, nil
}

func splitConcat(s string) []string {
	parts := strings.Split(s, " . ")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// unquoteNames removes the quotes nft prints around symbolic values of
// non-string fields (device group 0 lists as "default"); ifname fields keep
// theirs, as the fake holds them.
func unquoteNames(types, key []string) []string {
	for i := range key {
		if i < len(types) && types[i] != "ifname" {
			key[i] = strings.Trim(key[i], `"`)
		}
	}
	return key
}
