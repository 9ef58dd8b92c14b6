package dpbench

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Counters are a network namespace's kernel counters, by "Group:Name":
// the TCP MIB (/proc/net/snmp and /proc/net/netstat, e.g. "Tcp:RetransSegs",
// "TcpExt:TCPSynRetrans", "TcpExt:ListenOverflows"), the socket counts of
// /proc/net/sockstat ("TCP:tw" is the sockets in TIME_WAIT), and with
// conntrack ("conntrack:count" and the sums over CPUs of `conntrack -S`,
// e.g. "conntrack:drop", "conntrack:insert_failed", "conntrack:early_drop").
type Counters map[string]int64

// ReadCounters reads n's counters; withConntrack adds the conntrack ones
// (for a namespace whose traffic conntrack tracks, such as a node's).
func ReadCounters(n Netns, withConntrack bool) (Counters, error) {
	out, err := n.cmd("cat", "/proc/net/snmp", "/proc/net/netstat", "/proc/net/sockstat").Output()
	if err != nil {
		return nil, fmt.Errorf("read /proc/net counters in %s: %w", n, err)
	}
	c := Counters{}
	if err := c.parseMIB(out); err != nil {
		return nil, err
	}
	if !withConntrack {
		return c, nil
	}
	out, err = n.cmd("conntrack", "-S").Output()
	if err != nil {
		return nil, fmt.Errorf("conntrack -S in %s: %w", n, err)
	}
	c.parseConntrackStats(out)
	out, err = n.cmd("cat", "/proc/sys/net/netfilter/nf_conntrack_count").Output()
	if err != nil {
		return nil, fmt.Errorf("read nf_conntrack_count in %s: %w", n, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("nf_conntrack_count %q: %w", out, err)
	}
	c["conntrack:count"] = v
	return c, nil
}

// parseMIB reads the two-line groups of /proc/net/snmp and netstat ("Tcp:
// names…" then "Tcp: values…") and the one-line groups of sockstat ("TCP:
// inuse 3 orphan 0 tw 5 …").
func (c Counters) parseMIB(out []byte) error {
	var names []string
	var group string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		g, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[0], 10, 64); err != nil {
			if len(f) > 1 {
				if _, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					c.pairs(g, f) // sockstat: name value name value…
					continue
				}
			}
			group, names = g, f
			continue
		}
		if g != group || len(f) != len(names) {
			return fmt.Errorf("counters: values of %q do not follow their names", g)
		}
		for i, v := range f {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("counters: %s:%s=%q: %w", g, names[i], v, err)
			}
			c[g+":"+names[i]] = n
		}
		group, names = "", nil
	}
	return sc.Err()
}

func (c Counters) pairs(group string, f []string) {
	for i := 0; i+1 < len(f); i += 2 {
		if v, err := strconv.ParseInt(f[i+1], 10, 64); err == nil {
			c[group+":"+f[i]] = v
		}
	}
}

// parseConntrackStats sums `conntrack -S` lines ("cpu=0 found=0 invalid=3 …").
func (c Counters) parseConntrackStats(out []byte) {
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok || k == "cpu" {
				continue
			}
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				c["conntrack:"+k] += n
			}
		}
	}
}

// Sub returns c − before for every counter of c (gauges such as "TCP:tw"
// and "conntrack:count" are differences too).
func (c Counters) Sub(before Counters) Counters {
	d := Counters{}
	for k, v := range c {
		d[k] = v - before[k]
	}
	return d
}

// Show formats the named counters ("k=v k=v"), in the order given; a name
// c does not hold is shown as "?".
func (c Counters) Show(names ...string) string {
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		if v, ok := c[k]; ok {
			fmt.Fprintf(&b, "%s=%d", k, v)
		} else {
			fmt.Fprintf(&b, "%s=?", k)
		}
	}
	return b.String()
}

// NonZero lists the counters of c that are not zero, sorted.
func (c Counters) NonZero() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if c[k] != 0 {
			out = append(out, fmt.Sprintf("%s=%d", k, c[k]))
		}
	}
	return out
}

// Counter names the connection-rate probe's evidence is read from.
var (
	// ClientCounters: SYNs retransmitted (a dropped SYN costs the 1 s
	// initial RTO), connect failures, resets, and the sockets in TIME_WAIT.
	ClientCounters = []string{"Tcp:ActiveOpens", "Tcp:AttemptFails", "Tcp:RetransSegs", "TcpExt:TCPSynRetrans", "Tcp:OutRsts", "TCP:tw"}
	// ServerCounters: accept queue overflows and drops, resets, TIME_WAIT.
	ServerCounters = []string{"Tcp:PassiveOpens", "TcpExt:ListenOverflows", "TcpExt:ListenDrops", "Tcp:RetransSegs", "TcpExt:TW", "TcpExt:TCPTimeWaitOverflow", "Tcp:OutRsts", "TCP:tw"}
	// NodeCounters: conntrack's table and its drops.
	NodeCounters = []string{"conntrack:count", "conntrack:insert_failed", "conntrack:drop", "conntrack:early_drop", "conntrack:invalid", "conntrack:clash_resolve"}
)
