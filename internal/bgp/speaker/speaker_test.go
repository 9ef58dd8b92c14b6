package speaker

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/trellisnet/trellis/internal/bgp"
)

// logRecorder keeps the speaker's log messages (its changes to GoBGP are
// each logged once).
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.msgs = append(r.msgs, args)
	}, funcr.Options{Verbosity: 2})
}

// take returns the messages logged since the last take that mention one
// of GoBGP's changes.
func (r *logRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		for _, k := range []string{"neighbour added", "neighbour re-added", "neighbour updated", "neighbour removed", "path advertised",
			"path withdrawn", "policies set", "speaker started", "restarting the speaker", "stopping"} {
			if strings.Contains(m, k) {
				out = append(out, m)
				break
			}
		}
	}
	r.msgs = nil
	return out
}

func countWith(msgs []string, sub string) int {
	n := 0
	for _, m := range msgs {
		if strings.Contains(m, sub) {
			n++
		}
	}
	return n
}

// TestApplyDiffs runs GoBGP in-process without a listener and with
// passive neighbours (nothing leaves the machine): an unchanged Desired
// changes nothing in GoBGP; each change changes only what changed.
func TestApplyDiffs(t *testing.T) {
	rec := &logRecorder{}
	s := New(rec.logger())
	t.Cleanup(s.Stop)
	ctx := context.Background()
	lp := uint32(100)
	d := bgp.Desired{
		Enabled: true,
		Global: bgp.Global{ASN: 64512, RouterID: mustAddr("192.0.2.1"), ListenPort: -1,
			GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: time.Minute}},
		Neighbors: []bgp.Neighbor{
			{Address: mustAddr("192.0.2.254"), ASN: 65000, Passive: true, Password: "pw", Export: []netip.Prefix{mustPrefix("10.244.1.0/24")}},
			{Address: mustAddr("192.0.2.3"), ASN: 64512, Passive: true, Internal: true},
		},
		Paths: []bgp.Path{
			{Prefix: mustPrefix("10.244.1.0/24"), Communities: []string{"64512:1"}},
			{Prefix: mustPrefix("10.96.0.10/32"), LocalPreference: &lp},
		},
		Import: bgp.ImportPolicy{Reject: []netip.Prefix{mustPrefix("10.244.1.0/24")}, Cluster: []netip.Prefix{mustPrefix("10.244.0.0/16")}, MaxPrefixes: 100},
	}
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	first := rec.take()
	if countWith(first, "speaker started") != 1 || countWith(first, "neighbour added") != 2 ||
		countWith(first, "path advertised") != 2 || countWith(first, "policies set") != 1 {
		t.Fatalf("first Apply: %q", first)
	}
	for _, m := range first {
		if strings.Contains(m, `"pw"`) {
			t.Fatalf("password logged: %s", m)
		}
	}
	ps := s.Peers()
	if len(ps) != 2 || ps[0].Address != mustAddr("192.0.2.3") || ps[1].ASN != 65000 || ps[1].State == bgp.StateEstablished {
		t.Fatalf("Peers: %+v", ps)
	}
	if l := s.Learned(); len(l) != 0 {
		t.Fatalf("own paths reported as learned: %+v", l)
	}

	// The same Desired (and a copy with the Restart State bit and a
	// different Origin text) changes nothing.
	for range 3 {
		if err := s.Apply(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	again := d
	again.Global.GracefulRestart.Restarting = true
	again.Paths = slices.Clone(d.Paths)
	again.Paths[0].Origin = "renamed"
	if err := s.Apply(ctx, again); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("re-Apply of the same Desired changed GoBGP: %q", got)
	}

	// One neighbour's allowOwnAS, one path's community, one export list.
	// (No BFD here: GoBGP would send BFD packets to the neighbour.)
	d.Neighbors = slices.Clone(d.Neighbors)
	d.Neighbors[1].AllowOwnAS = 1
	d.Paths = slices.Clone(d.Paths)
	d.Paths[1].Communities = []string{"64512:2"}
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	got := rec.take()
	if countWith(got, "neighbour updated") != 1 || !strings.Contains(strings.Join(got, " "), "192.0.2.3") ||
		countWith(got, "path advertised") != 1 || !strings.Contains(strings.Join(got, " "), "10.96.0.10/32") || len(got) != 2 {
		t.Fatalf("change: %q", got)
	}
	d.Neighbors[0].Export = append(d.Neighbors[0].Export, mustPrefix("10.96.0.10/32"))
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 1 || countWith(got, "policies set") != 1 {
		t.Fatalf("export change: %q", got)
	}

	// Timers and the route-reflector role: re-added.
	d.Neighbors[0].HoldTime = 30 * time.Second
	d.Neighbors[1].RouteReflectorClient = true
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); countWith(got, "neighbour re-added") != 2 || len(got) != 2 {
		t.Fatalf("timers and reflector role: %q", got)
	}
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("re-Apply after re-adding: %q", got)
	}

	// Remove a neighbour and a path.
	d.Neighbors = d.Neighbors[:1]
	d.Paths = d.Paths[:1]
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	got = rec.take()
	if countWith(got, "neighbour removed") != 1 || countWith(got, "path withdrawn") != 1 || countWith(got, "policies set") != 1 || len(got) != 3 {
		t.Fatalf("removal: %q", got)
	}
	if ps := s.Peers(); len(ps) != 1 || ps[0].Address != mustAddr("192.0.2.254") {
		t.Fatalf("Peers after removal: %+v", ps)
	}

	// A new router ID restarts GoBGP and re-adds everything.
	d.Global.RouterID = mustAddr("192.0.2.2")
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	got = rec.take()
	if countWith(got, "restarting the speaker") != 1 || countWith(got, "speaker started") != 1 ||
		countWith(got, "neighbour added") != 1 || countWith(got, "path advertised") != 1 {
		t.Fatalf("identity change: %q", got)
	}

	// Disabled: stopped, nothing left.
	if err := s.Apply(ctx, bgp.Desired{}); err != nil {
		t.Fatal(err)
	}
	if ps := s.Peers(); ps != nil {
		t.Fatalf("Peers after disable: %+v", ps)
	}
	select {
	case <-s.Changes():
	default:
		t.Fatal("no Changes signal after stopping")
	}
}

func TestApplyRejectsBadDesired(t *testing.T) {
	s := New(logr.Discard())
	t.Cleanup(s.Stop)
	err := s.Apply(context.Background(), bgp.Desired{Enabled: true, Global: bgp.Global{ASN: 1, RouterID: mustAddr("fd00::1"), ListenPort: -1}})
	if err == nil || !strings.Contains(err.Error(), "IPv4") {
		t.Fatalf("IPv6 router ID: %v", err)
	}
	d := bgp.Desired{Enabled: true, Global: bgp.Global{ASN: 1, RouterID: mustAddr("192.0.2.1"), ListenPort: -1},
		Neighbors: []bgp.Neighbor{{Address: mustAddr("192.0.2.9"), ASN: 2, Passive: true}, {Address: mustAddr("192.0.2.8")}},
		Paths:     []bgp.Path{{Prefix: mustPrefix("10.0.0.0/8"), Communities: []string{"bad"}}, {Prefix: mustPrefix("10.1.0.0/16")}}}
	err = s.Apply(context.Background(), d)
	if err == nil || !strings.Contains(err.Error(), "ASN is 0") || !strings.Contains(err.Error(), "community") {
		t.Fatalf("want the bad neighbour and the bad path reported: %v", err)
	}
	// The good ones are applied anyway.
	if ps := s.Peers(); len(ps) != 1 || ps[0].Address != mustAddr("192.0.2.9") {
		t.Fatalf("Peers: %+v", ps)
	}
}
