// Package nfttrace walks a knftables.Fake ruleset for one packet and answers
// accept or drop. It understands only a small vocabulary — the one
// internal/policy emits — and returns an error for anything else, so a test
// can never pass because the tracer silently skipped a rule it did not know:
//
//	matches:    iifname|oifname "literal" (trailing * = prefix),
//	            ct state a,b,
//	            meta nfproto ipv4|ipv6,
//	            icmpv6 type NAME | { NAME, ... } (the names nft lists),
//	            fib saddr . iif oif exists|missing (strict reverse path:
//	            Packet.SrcRoute == Packet.IIF),
//	            fib daddr . iif oif exists|missing (the route to Dst, which
//	            is Packet.OIF once routed, leaves through IIF: hairpin),
//	            EXPR [. EXPR]... [!=] @set
//	statements: EXPR [. EXPR]... vmap @map, counter [name X],
//	            log [prefix "…"] [group N], limit rate R [burst B packets]
//	            (always under the limit),
//	            accept, drop, return, jump CHAIN, goto CHAIN
//	EXPR:       iifname, oifname, iifgroup, oifgroup, ip saddr, ip daddr,
//	            ip6 saddr, ip6 daddr, meta l4proto, th dport
//
// Set and map element fields may be single values, prefixes (a/n) or ranges
// (lo-hi) of ipv4_addr, ipv6_addr, inet_proto and inet_service, devgroup numbers
// ("default" = 0), or ifname strings.
package nfttrace

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/knftables"
)

// Packet is the packet being traced.
type Packet struct {
	// Hook is the netfilter hook it traverses: "forward", "input" or "output".
	Hook     string
	IIF, OIF string
	// IIFGroup and OIFGroup are the interfaces' device groups.
	IIFGroup, OIFGroup uint32
	// SrcRoute is the interface the node's route to Src leaves through (what
	// a strict fib reverse-path lookup finds).
	SrcRoute string
	Src, Dst netip.Addr
	// Proto is the IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP,
	// 58 ICMPv6).
	Proto uint8
	// ICMPType is the ICMPv6 type when Proto is 58.
	ICMPType uint8
	// DPort is the destination port (ignored for protocols without ports).
	DPort uint16
	// CTState is the conntrack state: "new", "established", ...
	CTState string
}

// Verdict of a trace.
type Verdict string

const (
	Accept Verdict = "accept"
	Drop   Verdict = "drop"
)

const maxDepth = 16

// Trace runs pkt through every base chain of pkt.Hook in every table of
// fake. The packet is dropped if any base chain drops it.
func Trace(fake *knftables.Fake, pkt Packet) (Verdict, error) {
	fake.RLock()
	defer fake.RUnlock()
	for _, nt := range tables(fake) {
		t := nt.table
		for _, cname := range sortedKeys(t.Chains) {
			c := t.Chains[cname]
			if c.Hook == nil || string(*c.Hook) != pkt.Hook {
				continue
			}
			v, err := runChain(t, c, &pkt, 0)
			if err != nil {
				return "", fmt.Errorf("table %s chain %s: %w", nt.name, cname, err)
			}
			if v == Drop {
				return Drop, nil
			}
			if v == "" && c.Policy != nil && *c.Policy == knftables.DropPolicy {
				return Drop, nil
			}
		}
	}
	return Accept, nil
}

type namedTable struct {
	name  string
	table *knftables.FakeTable
}

// tables lists the fake's tables in a stable order; the caller holds the lock.
func tables(fake *knftables.Fake) []namedTable {
	var out []namedTable
	for _, fam := range sortedKeys(fake.Tables) {
		for _, tname := range sortedKeys(fake.Tables[fam]) {
			out = append(out, namedTable{string(fam) + " " + tname, fake.Tables[fam][tname]})
		}
	}
	return out
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// runChain returns Accept, Drop, or "" when the chain returns/falls off.
func runChain(t *knftables.FakeTable, c *knftables.FakeChain, pkt *Packet, depth int) (Verdict, error) {
	if depth > maxDepth {
		return "", fmt.Errorf("chain depth over %d at %s", maxDepth, c.Name)
	}
	for _, r := range c.Rules {
		v, err := runRule(t, r.Rule, pkt)
		if err != nil {
			return "", fmt.Errorf("rule %q: %w", r.Rule, err)
		}
		switch {
		case v.kind == "":
			continue
		case v.kind == "accept":
			return Accept, nil
		case v.kind == "drop":
			return Drop, nil
		case v.kind == "return":
			return "", nil
		case v.kind == "jump" || v.kind == "goto":
			target := t.Chains[v.target]
			if target == nil {
				return "", fmt.Errorf("no chain %q", v.target)
			}
			res, err := runChain(t, target, pkt, depth+1)
			if err != nil {
				return "", err
			}
			if res != "" || v.kind == "goto" {
				return res, nil
			}
		}
	}
	return "", nil
}

type verdict struct {
	kind   string // "", accept, drop, return, jump, goto
	target string
}

// tokenize splits a rule on spaces, keeping quoted strings whole.
func tokenize(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote := false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			cur.WriteRune(r)
		case r == ' ' && !inQuote:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// runRule evaluates one rule: kind "" means no verdict (a match failed or a
// vmap had no entry).
func runRule(t *knftables.FakeTable, rule string, pkt *Packet) (verdict, error) {
	toks := tokenize(rule)
	for i := 0; i < len(toks); {
		switch tok := toks[i]; tok {
		case "counter": // anonymous or "counter name X": no effect on the verdict
			i++
			if i+1 < len(toks) && toks[i] == "name" {
				i += 2
			}
		case "limit": // limit rate N/unit [burst N packets]: traced as under the limit
			i++
			if i+1 < len(toks) && toks[i] == "rate" {
				i += 2
			}
			if i+2 < len(toks) && toks[i] == "burst" {
				i += 3
			}
		case "log": // log [prefix "…"] [group N]: no effect on the verdict
			i++
			for i+1 < len(toks) && (toks[i] == "prefix" || toks[i] == "group") {
				i += 2
			}
		case "accept", "drop", "return":
			if i != len(toks)-1 {
				return verdict{}, fmt.Errorf("tokens after %s", tok)
			}
			return verdict{kind: tok}, nil
		case "jump", "goto":
			if i != len(toks)-2 {
				return verdict{}, fmt.Errorf("%s needs exactly one chain at the end", tok)
			}
			return verdict{kind: tok, target: toks[i+1]}, nil
		case "fib":
			if i+6 > len(toks) || strings.Join(toks[i+2:i+5], " ") != ". iif oif" ||
				(toks[i+1] != "saddr" && toks[i+1] != "daddr") || (toks[i+5] != "exists" && toks[i+5] != "missing") {
				return verdict{}, fmt.Errorf("unsupported fib expression")
			}
			found := pkt.SrcRoute != "" && pkt.SrcRoute == pkt.IIF
			if toks[i+1] == "daddr" {
				found = pkt.OIF != "" && pkt.OIF == pkt.IIF
			}
			if found != (toks[i+5] == "exists") {
				return verdict{}, nil
			}
			i += 6
		case "icmpv6":
			types, n, err := icmpv6Types(toks[i:])
			if err != nil {
				return verdict{}, err
			}
			if !pkt.Src.Is6() || pkt.Proto != 58 || !slices.Contains(types, pkt.ICMPType) {
				return verdict{}, nil
			}
			i += n
		case "ct":
			if i+2 >= len(toks) || toks[i+1] != "state" {
				return verdict{}, fmt.Errorf("unsupported ct expression")
			}
			if !contains(strings.Split(toks[i+2], ","), pkt.CTState) {
				return verdict{}, nil
			}
			i += 3
		case "meta":
			if i+1 < len(toks) && toks[i+1] == "nfproto" {
				if i+2 >= len(toks) || (toks[i+2] != "ipv4" && toks[i+2] != "ipv6") {
					return verdict{}, fmt.Errorf("unsupported meta nfproto match")
				}
				if pkt.Src.Is4() != (toks[i+2] == "ipv4") {
					return verdict{}, nil
				}
				i += 3
				continue
			}
			fallthrough
		default:
			vals, n, err := parseExprs(toks[i:], pkt)
			if err != nil {
				return verdict{}, err
			}
			i += n
			if i >= len(toks) {
				return verdict{}, fmt.Errorf("expression without operator")
			}
			if toks[i] == "vmap" {
				if i+2 != len(toks) {
					return verdict{}, fmt.Errorf("vmap must end the rule")
				}
				return lookupVmap(t, toks[i+1], vals)
			}
			neg := false
			if toks[i] == "!=" {
				neg = true
				i++
			}
			if i >= len(toks) {
				return verdict{}, fmt.Errorf("missing operand")
			}
			if vals == nil { // expression does not apply: no match either way
				return verdict{}, nil
			}
			ok, err := matchOperand(t, toks[i], vals)
			if err != nil {
				return verdict{}, err
			}
			i++
			if ok == neg {
				return verdict{}, nil
			}
		}
	}
	return verdict{}, nil
}

// icmpv6TypeNumbers are the ICMPv6 type names nft uses.
var icmpv6TypeNumbers = map[string]uint8{
	"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
	"echo-request": 128, "echo-reply": 129, "mld-listener-query": 130, "mld-listener-report": 131,
	"mld-listener-done": 132, "nd-router-solicit": 133, "nd-router-advert": 134,
	"nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "nd-redirect": 137, "mld2-listener-report": 143,
}

// icmpv6Types parses "icmpv6 type NAME" or "icmpv6 type { NAME, ... }" at
// the start of toks: the types and the tokens used.
func icmpv6Types(toks []string) ([]uint8, int, error) {
	if len(toks) < 3 || toks[1] != "type" {
		return nil, 0, fmt.Errorf("unsupported icmpv6 expression")
	}
	one := func(name string) (uint8, error) {
		if n, ok := icmpv6TypeNumbers[strings.TrimSuffix(name, ",")]; ok {
			return n, nil
		}
		return 0, fmt.Errorf("unknown icmpv6 type %q", name)
	}
	if toks[2] != "{" {
		n, err := one(toks[2])
		return []uint8{n}, 3, err
	}
	var out []uint8
	for i := 3; i < len(toks); i++ {
		if toks[i] == "}" {
			return out, i + 1, nil
		}
		n, err := one(toks[i])
		if err != nil {
			return nil, 0, err
		}
		out = append(out, n)
	}
	return nil, 0, fmt.Errorf("icmpv6 type set without }")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
