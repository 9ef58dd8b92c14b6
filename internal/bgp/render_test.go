package bgp

import (
	"fmt"
	"net/netip"
	"strings"
)

// render prints a Desired and its Problems one fact a line, for golden
// files a reviewer can read. Passwords print redacted; tests check them
// separately.
func render(d Desired, problems []Problem) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("enabled: %t", d.Enabled)
	if d.Enabled {
		g := d.Global
		p("global: asn=%d routerID=%s listen=%s:%d gracefulRestart=%t/%s restarting=%t",
			g.ASN, g.RouterID, addrs(g.ListenAddresses), g.ListenPort, g.GracefulRestart.Enabled,
			g.GracefulRestart.RestartTime, g.GracefulRestart.Restarting)
	}
	for _, n := range d.Neighbors {
		p("neighbor %s asn=%d source=%s internal=%t families=%v", n.Address, n.ASN, n.Source, n.Internal, n.Families)
		var opts []string
		if n.Password != "" {
			opts = append(opts, "password="+n.Password.String())
		}
		if n.Multihop != 0 {
			opts = append(opts, fmt.Sprintf("multihop=%d", n.Multihop))
		}
		if n.TTLSecurity != 0 {
			opts = append(opts, fmt.Sprintf("ttlSecurity=%d", n.TTLSecurity))
		}
		if n.AllowOwnAS != 0 {
			opts = append(opts, fmt.Sprintf("allowOwnAS=%d", n.AllowOwnAS))
		}
		if n.Passive {
			opts = append(opts, "passive")
		}
		if n.HoldTime != 0 || n.Keepalive != 0 || n.ConnectRetry != 0 {
			opts = append(opts, fmt.Sprintf("timers=hold:%s,keepalive:%s,connectRetry:%s", n.HoldTime, n.Keepalive, n.ConnectRetry))
		}
		if n.BFD.Enabled {
			opts = append(opts, fmt.Sprintf("bfd=rx:%s,tx:%s,x%d", n.BFD.MinRx, n.BFD.MinTx, n.BFD.DetectMultiplier))
		}
		if n.RouteReflectorClient {
			opts = append(opts, "routeReflectorClient clusterID="+n.ClusterID.String())
		} else if n.ClusterID.IsValid() {
			opts = append(opts, "clusterID="+n.ClusterID.String())
		}
		if len(opts) > 0 {
			p("  %s", strings.Join(opts, " "))
		}
		p("  export: %s", prefixes(n.Export))
	}
	for _, path := range d.Paths {
		line := "path " + path.Prefix.String()
		if len(path.Communities) > 0 {
			line += " communities=" + strings.Join(path.Communities, ",")
		}
		if path.LocalPreference != nil {
			line += fmt.Sprintf(" localPreference=%d", *path.LocalPreference)
		}
		p("%s origin=%q", line, path.Origin)
	}
	if d.Enabled {
		im := d.Import
		p("import: install=%t maxPrefixes=%d", im.Install, im.MaxPrefixes)
		p("  reject: %s", prefixes(im.Reject))
		p("  podCIDRs: %s", prefixes(im.PodCIDRs))
		p("  cluster: %s", prefixes(im.Cluster))
		var acc []string
		for _, m := range im.Accept {
			acc = append(acc, fmt.Sprintf("%s le %d", m.Prefix, m.MaxLen))
		}
		p("  accept: [%s]", strings.Join(acc, ", "))
	}
	for _, pr := range problems {
		p("problem %s %s: %s", pr.Reason, pr.Object, pr.Message)
	}
	return b.String()
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func addrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
