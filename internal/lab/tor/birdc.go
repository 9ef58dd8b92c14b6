package tor

import (
	"net/netip"
	"strings"
)

// Route is one route of `birdc show route`.
type Route struct {
	Prefix   netip.Prefix
	Protocol string // the protocol that brought it: subnet1_2, origin, ...
	Best     bool   // marked * (the one BIRD uses and exports)
	NextHops []netip.Addr
}

// ParseRoutes reads the output of `birdc show route` (every route of
// every prefix, the best marked *).
func ParseRoutes(out string) []Route {
	var routes []Route
	var cur netip.Prefix
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		indented := line[0] == ' ' || line[0] == '\t'
		if !indented {
			p, err := netip.ParsePrefix(f[0])
			if err != nil {
				continue // "BIRD 2.0.12 ready.", "Table master4:"
			}
			cur, f = p, f[1:]
		}
		switch {
		case len(f) >= 2 && f[0] == "via" && len(routes) > 0:
			if a, err := netip.ParseAddr(f[1]); err == nil {
				routes[len(routes)-1].NextHops = append(routes[len(routes)-1].NextHops, a)
			}
		case len(f) >= 2 && strings.HasPrefix(f[1], "[") && cur.IsValid():
			r := Route{Prefix: cur, Protocol: strings.TrimPrefix(f[1], "["), Best: strings.Contains(line, " * ")}
			routes = append(routes, r)
		}
	}
	return routes
}

// BestNextHops maps every prefix to the next hops of its best route.
func BestNextHops(routes []Route) map[netip.Prefix][]netip.Addr {
	out := map[netip.Prefix][]netip.Addr{}
	for _, r := range routes {
		if r.Best {
			out[r.Prefix] = append(out[r.Prefix], r.NextHops...)
		}
	}
	return out
}

// Protocol is one line of `birdc show protocols`.
type Protocol struct {
	Name, Proto, State string
	// Info is the last column: Established, Active, Passive, errors.
	Info string
}

// ParseProtocols reads the output of `birdc show protocols`.
func ParseProtocols(out string) []Protocol {
	var ps []Protocol
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || line[0] == ' ' || line[0] == '\t' || f[0] == "Name" || f[0] == "BIRD" {
			continue
		}
		p := Protocol{Name: f[0], Proto: f[1], State: f[3]}
		// Since is one field ("13:50:18.037") or two ("2026-12-02 13:50:18").
		rest := f[4:]
		if len(rest) > 1 && strings.Count(rest[0], "-") == 2 && strings.Contains(rest[1], ":") {
			rest = rest[2:]
		} else {
			rest = rest[1:]
		}
		p.Info = strings.Join(rest, " ")
		ps = append(ps, p)
	}
	return ps
}

// NodeSessions are the BGP protocols BIRD spawned for nodes that opened
// sessions (subnetN_M and, on the MD5 addresses, subnetN_md5_M), by name.
func NodeSessions(ps []Protocol) map[string]Protocol {
	out := map[string]Protocol{}
	for _, p := range ps {
		i := strings.LastIndexByte(p.Name, '_')
		if p.Proto != "BGP" || i < 0 || strings.Trim(p.Name[i+1:], "0123456789") != "" || i == len(p.Name)-1 {
			continue
		}
		out[p.Name] = p
	}
	return out
}
