//go:build e2e

package perpacket

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// slice is how long one arm runs before the other takes over within a
// round: short enough that a burst of other work on the machine (a second
// or so) lands on both arms.
const slice = 250 * time.Millisecond

// Arm is one round's measurement of one arm.
type Arm struct {
	Isolated bool    `json:"isolated"`
	Pair     string  `json:"pair"`
	Mbps     float64 `json:"mbps"`
	// ConnPerSec is the connection rate over the round's slices, Slices
	// each slice's rate, ConnectP99 the worst slice's p99 connect time.
	ConnPerSec float64       `json:"connPerSec"`
	Slices     []float64     `json:"slices"`
	ConnectP99 time.Duration `json:"connectP99"`
	// Counter deltas over the round: the pair's client and server pods'
	// TCP counters (its traffic only) and the two nodes' counters (both
	// arms'); TIME_WAIT sockets and conntrack entries at their level at
	// the end.
	Client, Server, ClientNode, ServerNode dpbench.Counters `json:"-"`
}

func (a Arm) String() string {
	rates := make([]string, len(a.Slices))
	for i, r := range a.Slices {
		rates[i] = fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.0f Mbit/s, %.0f connections/s (slices %v, connect p99 ≤ %s); client %s; server %s",
		a.Mbps, a.ConnPerSec, rates, a.ConnectP99.Round(time.Microsecond),
		a.Client.Show(dpbench.ClientCounters...), a.Server.Show(dpbench.ServerCounters...))
}

// round measures both arms in alternating slices, in the order
// first-second-second-first-…: throughput over one connection per pair,
// then the connection rate, with the counters around the round.
func round(t testing.TB, first, second *pair, o Options) (Arm, Arm) {
	t.Helper()
	ps := [2]*pair{first, second}
	var before [2][2]dpbench.Counters
	for i, p := range ps {
		before[i][0], before[i][1] = p.podCounters(t)
	}
	cn0, sn0 := first.nodeCounters(t)

	var conns [2]net.Conn
	for i, p := range ps {
		framework.InNetns(t, string(p.client), func() error {
			var err error
			conns[i], err = net.DialTimeout("tcp4", net.JoinHostPort(p.serverIP, "5201"), 2*time.Second)
			return err
		})
		defer conns[i].Close()
	}
	var bytes [2]int64
	var busy [2]time.Duration
	buf := make([]byte, 128<<10)
	abba(int(o.Throughput/slice), func(i int) {
		start := time.Now()
		for time.Since(start) < slice {
			w, err := conns[i].Write(buf)
			bytes[i] += int64(w)
			if err != nil {
				t.Fatalf("pair %s: throughput write: %v", ps[i].name, err)
			}
		}
		busy[i] += time.Since(start)
	})

	var arms [2]Arm
	var made [2]int
	var spent [2]time.Duration
	abba(int(o.ConnRate/slice), func(i int) {
		r, err := dpbench.ConnRateLoop(ps[i].client, net.JoinHostPort(ps[i].serverIP, "5202"),
			dpbench.ConnRateOptions{Duration: slice, CloseClientFirst: o.CloseClientFirst})
		if err != nil {
			t.Fatalf("pair %s: connection rate: %v", ps[i].name, err)
		}
		made[i] += r.Connections
		spent[i] += r.Elapsed
		arms[i].Slices = append(arms[i].Slices, r.Rate())
		arms[i].ConnectP99 = max(arms[i].ConnectP99, r.ConnectP99)
	})

	cn1, sn1 := first.nodeCounters(t)
	for i, p := range ps {
		c1, s1 := p.podCounters(t)
		a := &arms[i]
		a.Pair = p.name
		a.Mbps = float64(bytes[i]) * 8 / busy[i].Seconds() / 1e6
		a.ConnPerSec = float64(made[i]) / spent[i].Seconds()
		a.Client, a.Server = c1.Sub(before[i][0]), s1.Sub(before[i][1])
		a.Client["TCP:tw"], a.Server["TCP:tw"] = c1["TCP:tw"], s1["TCP:tw"]
		a.ClientNode, a.ServerNode = cn1.Sub(cn0), sn1.Sub(sn0)
		a.ClientNode["conntrack:count"], a.ServerNode["conntrack:count"] = cn1["conntrack:count"], sn1["conntrack:count"]
	}
	return arms[0], arms[1]
}

// abba calls f(0), f(1), f(1), f(0), f(0), f(1), … until each side ran n
// times (at least once).
func abba(n int, f func(i int)) {
	n = max(n, 1)
	for k := 0; k < n; k++ {
		if k%2 == 0 {
			f(0)
			f(1)
		} else {
			f(1)
			f(0)
		}
	}
}

func (b *pair) podCounters(t testing.TB) (client, server dpbench.Counters) {
	t.Helper()
	return readCounters(t, b.client, false), readCounters(t, b.server, false)
}

func (b *pair) nodeCounters(t testing.TB) (clientNode, serverNode dpbench.Counters) {
	t.Helper()
	return readCounters(t, b.clientNode, true), readCounters(t, b.serverNode, true)
}

func readCounters(t testing.TB, n dpbench.Netns, conntrack bool) dpbench.Counters {
	t.Helper()
	c, err := dpbench.ReadCounters(n, conntrack)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
