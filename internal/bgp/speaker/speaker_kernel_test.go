//go:build kernel

package speaker

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/netnstest"
)

const (
	addrA = "10.99.0.1"
	addrB = "10.99.0.2"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// node is one side's Desired: self peers with other, graceful restart
// on (restart time rt), originating paths, exporting export to other.
func node(self, other string, asn, otherASN uint32, rt time.Duration, paths []string, export []string) bgp.Desired {
	d := bgp.Desired{
		Enabled: true,
		Global: bgp.Global{ASN: asn, RouterID: addr(self), ListenAddresses: []netip.Addr{addr(self)},
			GracefulRestart: bgp.GracefulRestart{Enabled: rt > 0, RestartTime: rt}},
		Neighbors: []bgp.Neighbor{{Address: addr(other), ASN: otherASN, Source: "test", ConnectRetry: time.Second}},
		Import:    bgp.ImportPolicy{Install: true, MaxPrefixes: 1000},
	}
	for _, p := range paths {
		d.Paths = append(d.Paths, bgp.Path{Prefix: pfx(p), Origin: "test"})
	}
	for _, p := range export {
		d.Neighbors[0].Export = append(d.Neighbors[0].Export, pfx(p))
	}
	return d
}

func prefixes(ls []bgp.LearnedRoute) string {
	var s []string
	for _, l := range ls {
		s = append(s, l.Prefix.String())
	}
	return strings.Join(s, " ")
}

// TestKernelSpeakerSessionPathsAndFilters: two speakers in two
// namespaces establish an eBGP session and exchange paths; the export
// filter keeps a path from the neighbour it is not exported to; the import
// filter refuses the own pod CIDR, the cluster range and the default route;
// Apply with the same Desired touches no session; a changed export list
// and changed neighbour settings take effect live.
func TestKernelSpeakerSessionPathsAndFilters(t *testing.T) {
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	a := startSpeaker(t, na, "a")
	b := startSpeaker(t, nb, "b")

	// A: a node (AS 64512), pod CIDR 10.244.1.0/24, cluster 10.244.0.0/16;
	// a Service IP it originates but does not export to B.
	da := node(addrA, addrB, 64512, 65000, 0, []string{"10.244.1.0/24", "10.96.0.10/32"}, []string{"10.244.1.0/24"})
	da.Import.Reject = []netip.Prefix{pfx("10.244.1.0/24")}
	da.Import.Cluster = []netip.Prefix{pfx("10.244.0.0/16")}
	da.Paths[0].Communities = []string{"64512:100", "64512:1:2"}
	lp := uint32(200)
	da.Paths[0].LocalPreference = &lp
	// B: the "ToR" (AS 65000) originates a good prefix and three A must refuse.
	db := node(addrB, addrA, 65000, 64512, 0,
		[]string{"198.18.100.0/24", "10.244.1.128/25", "10.244.0.0/16", "10.244.7.0/24", "0.0.0.0/0"},
		[]string{"198.18.100.0/24", "10.244.1.128/25", "10.244.0.0/16", "10.244.7.0/24", "0.0.0.0/0"})

	start := time.Now()
	a.Apply(da)
	b.Apply(db)
	stA, _ := established(t, a, addrB, 30*time.Second)
	t.Logf("MEASURE time to establish: %v", time.Since(start).Round(time.Millisecond))

	eventually(t, 15*time.Second, "B learns A's exported pod CIDR only", func() string {
		got := b.Learned()
		if prefixes(got) != "10.244.1.0/24" {
			return learnedString(got)
		}
		if got[0].NextHop != addr(addrA) || got[0].Neighbor != addr(addrA) || got[0].Stale {
			return "wrong next hop/neighbour/stale: " + learnedString(got)
		}
		return ""
	})
	eventually(t, 15*time.Second, "A learns only the allowed prefix", func() string {
		got := a.Learned()
		if prefixes(got) != "198.18.100.0/24" || got[0].NextHop != addr(addrB) {
			return learnedString(got)
		}
		return ""
	})
	eventually(t, 10*time.Second, "A's counters", func() string {
		p, _ := peerOf(a.Peers(), addrB)
		if p.Received != 5 || p.Accepted != 1 || p.Advertised != 1 || p.ASN != 65000 || p.Reason != "" {
			return fmt.Sprintf("%+v", p)
		}
		return ""
	})

	// The same Desired again: nothing changes, no session resets.
	for range 3 {
		a.Apply(da)
		b.Apply(db)
	}
	time.Sleep(2 * time.Second)
	p, _ := peerOf(a.Peers(), addrB)
	if p.State != bgp.StateEstablished || !p.Since.Equal(stA.Since) {
		t.Fatalf("re-Apply of the same Desired touched the session: before %+v after %+v", stA, p)
	}
	if got := prefixes(b.Learned()); got != "10.244.1.0/24" {
		t.Fatalf("B after re-Apply: %s", got)
	}

	// Export the Service IP to B too: advertised without a reset.
	da.Neighbors[0].Export = []netip.Prefix{pfx("10.96.0.10/32"), pfx("10.244.1.0/24")}
	a.Apply(da)
	eventually(t, 15*time.Second, "B learns the newly exported Service IP", func() string {
		if got := prefixes(b.Learned()); got != "10.96.0.10/32 10.244.1.0/24" {
			return got
		}
		return ""
	})
	// Withdraw the Service path.
	da.Paths = da.Paths[:1]
	a.Apply(da)
	eventually(t, 15*time.Second, "B sees the Service IP withdrawn", func() string {
		if got := prefixes(b.Learned()); got != "10.244.1.0/24" {
			return got
		}
		return ""
	})
	p, _ = peerOf(a.Peers(), addrB)
	if !p.Since.Equal(stA.Since) {
		t.Fatalf("export change reset the session: %+v", p)
	}

	// Import policy change live: accept only 198.18.0.0/15 up to /24 — still
	// the same; then only 203.0.113.0/24 — the learned route goes away.
	da.Import.Accept = []bgp.PrefixMatch{{Prefix: pfx("203.0.113.0/24"), MaxLen: 32}}
	a.Apply(da)
	eventually(t, 15*time.Second, "A drops what the new import policy refuses", func() string {
		if got := a.Learned(); len(got) != 0 {
			return learnedString(got)
		}
		return ""
	})
	da.Import.Accept = []bgp.PrefixMatch{{Prefix: pfx("198.18.0.0/15"), MaxLen: 24}}
	a.Apply(da)
	eventually(t, 15*time.Second, "A learns again under the widened import policy", func() string {
		if got := prefixes(a.Learned()); got != "198.18.100.0/24" {
			return got
		}
		return ""
	})

	// A neighbour setting that needs a new OPEN (hold time) is applied live:
	// the session comes back by itself.
	before, _ := peerOf(a.Peers(), addrB)
	da.Neighbors[0].HoldTime = 30 * time.Second
	da.Neighbors[0].Keepalive = 10 * time.Second
	a.Apply(da)
	eventually(t, 30*time.Second, "session re-established with the new timers", func() string {
		p, _ := peerOf(a.Peers(), addrB)
		if p.State != bgp.StateEstablished || !p.Since.After(before.Since) {
			return fmt.Sprintf("%+v (before: since %v)", p, before.Since)
		}
		return ""
	})
	eventually(t, 15*time.Second, "routes after the settings change", func() string {
		if got := prefixes(a.Learned()); got != "198.18.100.0/24" {
			return "A: " + got
		}
		if got := prefixes(b.Learned()); got != "10.244.1.0/24" {
			return "B: " + got
		}
		return ""
	})

	// Removing the neighbour ends the session on both sides.
	da.Neighbors = nil
	a.Apply(da)
	eventually(t, 15*time.Second, "neighbour removed", func() string {
		if ps := a.Peers(); len(ps) != 0 {
			return fmt.Sprintf("A still has %+v", ps)
		}
		if p, _ := peerOf(b.Peers(), addrA); p.State == bgp.StateEstablished {
			return "B still established"
		}
		if got := b.Learned(); len(got) != 0 {
			return "B still learns " + learnedString(got)
		}
		return ""
	})
}

// TestKernelSpeakerMaxPrefixes: a neighbour sending more prefixes than
// the limit is torn down (reason MaxPrefixes, nothing learned); raising
// the limit brings it back.
func TestKernelSpeakerMaxPrefixes(t *testing.T) {
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	a := startSpeaker(t, na, "a")
	b := startSpeaker(t, nb, "b")
	var many []string
	for i := range 10 {
		many = append(many, fmt.Sprintf("198.18.%d.0/24", i))
	}
	da := node(addrA, addrB, 64512, 65000, 0, nil, nil)
	da.Import.MaxPrefixes = 5
	db := node(addrB, addrA, 65000, 64512, 0, many, many)
	a.Apply(da)
	b.Apply(db)
	eventually(t, 30*time.Second, "A tears the session down at the limit", func() string {
		p, _ := peerOf(a.Peers(), addrB)
		if p.State == bgp.StateEstablished || p.Reason != "MaxPrefixes" {
			return fmt.Sprintf("%+v", p)
		}
		return ""
	})
	if got := a.Learned(); len(got) != 0 {
		t.Fatalf("A learned above the limit: %s", learnedString(got))
	}
	time.Sleep(3 * time.Second)
	if p, _ := peerOf(a.Peers(), addrB); p.State == bgp.StateEstablished {
		t.Fatalf("session came back by itself above the limit: %+v", p)
	}
	da.Import.MaxPrefixes = 100
	a.Apply(da)
	established(t, a, addrB, 30*time.Second)
	eventually(t, 15*time.Second, "A learns all 10 under the raised limit", func() string {
		if got := a.Learned(); len(got) != 10 {
			return learnedString(got)
		}
		return ""
	})
}

// TestKernelSpeakerMD5Mismatch: different TCP-MD5 passwords never
// establish, and Peers says why; the right password establishes.
func TestKernelSpeakerMD5Mismatch(t *testing.T) {
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	a := startSpeaker(t, na, "a")
	b := startSpeaker(t, nb, "b")
	da := node(addrA, addrB, 64512, 65000, 0, nil, nil)
	da.Neighbors[0].Password = "right-secret"
	db := node(addrB, addrA, 65000, 64512, 0, nil, nil)
	db.Neighbors[0].Password = "wrong-secret"
	a.Apply(da)
	b.Apply(db)
	start := time.Now()
	for time.Since(start) < 15*time.Second {
		if p, _ := peerOf(a.Peers(), addrB); p.State == bgp.StateEstablished {
			t.Fatalf("established with mismatched passwords: %+v", p)
		}
		time.Sleep(500 * time.Millisecond)
	}
	p, _ := peerOf(a.Peers(), addrB)
	if p.Reason != "ConnectFailed" || !strings.Contains(p.Message, "password") {
		t.Fatalf("no reason for the failing session: %+v", p)
	}
	if strings.Contains(p.Message, "right-secret") {
		t.Fatalf("password in the message: %q", p.Message)
	}
	db.Neighbors[0].Password = "right-secret"
	b.Apply(db)
	established(t, a, addrB, 30*time.Second)
	if p, _ := peerOf(a.Peers(), addrB); p.Reason != "" {
		t.Fatalf("reason kept after establishing: %+v", p)
	}
}

// TestKernelSpeakerGracefulRestart: Stop sends no NOTIFICATION, so the
// neighbour keeps the routes, marked stale, for the restart time; a new
// speaker started with Restarting refreshes them and the neighbour sees
// its End-of-RIB; a speaker that stays away is withdrawn at the restart
// time, not before.
func TestKernelSpeakerGracefulRestart(t *testing.T) {
	const rt = 12 * time.Second
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	a := startSpeaker(t, na, "a")
	b := startSpeaker(t, nb, "b")
	da := node(addrA, addrB, 64512, 65000, rt, []string{"10.244.1.0/24"}, []string{"10.244.1.0/24"})
	db := node(addrB, addrA, 65000, 64512, rt, []string{"198.18.100.0/24"}, []string{"198.18.100.0/24"})
	a.Apply(da)
	b.Apply(db)
	established(t, b, addrA, 30*time.Second)
	eventually(t, 15*time.Second, "exchange", func() string {
		if got := prefixes(b.Learned()); got != "10.244.1.0/24" {
			return "B: " + got
		}
		if got := prefixes(a.Learned()); got != "198.18.100.0/24" {
			return "A: " + got
		}
		p, _ := peerOf(b.Peers(), addrA)
		if p.GracefulRestart != "Negotiated" || !p.EndOfRIB {
			return fmt.Sprintf("B's view: %+v", p)
		}
		return ""
	})

	a.Stop()
	stopped := time.Now()
	eventually(t, 10*time.Second, "B holds A's routes stale", func() string {
		p, _ := peerOf(b.Peers(), addrA)
		if p.State == bgp.StateEstablished || p.GracefulRestart != "PeerRestarting" {
			return fmt.Sprintf("B's view: %+v", p)
		}
		if strings.Contains(p.Reason, "Notification") {
			return "A sent a NOTIFICATION: " + p.Reason + " " + p.Message
		}
		got := b.Learned()
		if len(got) != 1 || got[0].Prefix != pfx("10.244.1.0/24") || !got[0].Stale {
			return learnedString(got)
		}
		return ""
	})
	time.Sleep(rt / 2)
	if got := b.Learned(); len(got) != 1 || !got[0].Stale {
		t.Fatalf("B dropped A's routes before the restart time (%v after Stop): %s", time.Since(stopped), learnedString(got))
	}

	// A comes back after a real restart: the Restart State bit.
	a2 := startSpeaker(t, na, "a2")
	da.Global.GracefulRestart.Restarting = true
	a2.Apply(da)
	established(t, b, addrA, 30*time.Second)
	eventually(t, 20*time.Second, "B's routes from A refreshed, End-of-RIB seen", func() string {
		got := b.Learned()
		if len(got) != 1 || got[0].Stale {
			return learnedString(got)
		}
		p, _ := peerOf(b.Peers(), addrA)
		if !p.EndOfRIB || p.GracefulRestart != "Negotiated" {
			return fmt.Sprintf("B's view: %+v", p)
		}
		return ""
	})
	eventually(t, 20*time.Second, "A2 learns B's routes and finishes its restart", func() string {
		if got := prefixes(a2.Learned()); got != "198.18.100.0/24" {
			return got
		}
		p, _ := peerOf(a2.Peers(), addrB)
		if !p.EndOfRIB || p.GracefulRestart != "Negotiated" {
			return fmt.Sprintf("A2's view: %+v", p)
		}
		return ""
	})

	// A stays away: withdrawn at the restart time.
	t0 := time.Now()
	a2.Stop()
	stopped = time.Now()
	t.Logf("Stop took %v", stopped.Sub(t0).Round(10*time.Millisecond))
	eventually(t, 10*time.Second, "B holds stale again", func() string {
		got := b.Learned()
		if len(got) != 1 || !got[0].Stale {
			return learnedString(got)
		}
		return ""
	})
	gone := eventually(t, rt+10*time.Second, "B withdraws A's routes at the restart time", func() string {
		if got := b.Learned(); len(got) != 0 {
			return learnedString(got)
		}
		return ""
	})
	if since := time.Since(stopped); since < rt-2*time.Second {
		t.Fatalf("withdrawn %v after Stop, before the restart time %v", since, rt)
	}
	t.Logf("stale routes withdrawn %v after Stop (restart time %v)", time.Since(stopped).Round(100*time.Millisecond), rt)
	_ = gone
}

// TestKernelSpeakerThousandRoutes measures the exchange of 1,000 routes.
func TestKernelSpeakerThousandRoutes(t *testing.T) {
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	a := startSpeaker(t, na, "a")
	b := startSpeaker(t, nb, "b")
	var many []string
	for i := range 1000 {
		many = append(many, fmt.Sprintf("198.%d.%d.0/24", 18+i/256, i%256))
	}
	da := node(addrA, addrB, 64512, 65000, 0, nil, nil)
	db := node(addrB, addrA, 65000, 64512, 0, nil, nil)
	a.Apply(da)
	b.Apply(db)
	established(t, a, addrB, 30*time.Second)
	db = node(addrB, addrA, 65000, 64512, 0, many, many)
	start := time.Now()
	b.Apply(db)
	applied := time.Since(start)
	eventually(t, 60*time.Second, "A learns 1,000 routes", func() string {
		if got := a.Learned(); len(got) != 1000 {
			return fmt.Sprintf("%d learned", len(got))
		}
		return ""
	})
	t.Logf("MEASURE 1,000 routes: Apply on B %v, learned on A after %v", applied.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	t.Logf("MEASURE RSS with 1,000 routes (test binary as the speaker process): receiver %s, sender %s", a.RSS(), b.RSS())
	if !a.WaitChange(time.Second) {
		t.Fatal("Changes() not signalled after 1,000 best-path changes")
	}
}

// TestKernelSpeakerMeshAndReflector: three nodes of one AS (A and C
// reach each other through B). In a full mesh each learns the others' pod
// CIDRs from their originators; switched live to B reflecting for its
// clients A and C (which then no longer peer), each learns them through B
// with the originator's next hop (iBGP: next hop unchanged, never
// 0.0.0.0); and back to the full mesh.
func TestKernelSpeakerMeshAndReflector(t *testing.T) {
	const addrC, addrB2 = "10.98.0.3", "10.98.0.2"
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	nc := netnstest.NewNode(t, "10.97.0.3/24")
	if err := nb.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul1", MTU: 1500},
		PeerName: "ul1c", PeerNamespace: netlink.NsFd(int(nc.NS.Fd()))}); err != nil {
		t.Fatalf("veth B-C: %v", err)
	}
	nb.Configure(t, "ul1", addrB2+"/24")
	nc.Configure(t, "ul1c", addrC+"/24")
	for _, c := range []struct {
		n    *netnstest.Node
		args []string
	}{
		{nb, []string{"sysctl", "-qw", "net.ipv4.ip_forward=1"}},
		{na, []string{"ip", "route", "add", "10.98.0.0/24", "via", addrB}},
		{nc, []string{"ip", "route", "add", "10.99.0.0/24", "via", addrB2}},
	} {
		if out, err := c.n.Exec(c.args...); err != nil {
			t.Fatalf("%v: %v %s", c.args, err, out)
		}
	}

	pods := []netip.Prefix{pfx("10.244.1.0/24"), pfx("10.244.2.0/24"), pfx("10.244.3.0/24")}
	mk := func(self string, own int, neighbors ...bgp.Neighbor) bgp.Desired {
		d := bgp.Desired{Enabled: true,
			Global: bgp.Global{ASN: 64512, RouterID: addr(self), GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: time.Minute}},
			Paths:  []bgp.Path{{Prefix: pods[own], Origin: "podCIDR"}},
			Import: bgp.ImportPolicy{Install: true, Reject: pods[own : own+1], Cluster: []netip.Prefix{pfx("10.244.0.0/16")}, MaxPrefixes: 100}}
		for i, p := range pods {
			if i != own {
				d.Import.PodCIDRs = append(d.Import.PodCIDRs, p)
			}
		}
		for _, n := range neighbors {
			n.ASN, n.Internal, n.Source, n.ConnectRetry = 64512, true, "node/x", time.Second
			n.Export = pods[own : own+1]
			d.Neighbors = append(d.Neighbors, n)
		}
		return d
	}
	a := startSpeaker(t, na, "a")
	b := startSpeaker(t, nb, "b")
	c := startSpeaker(t, nc, "c")
	converge := func(phase string, want map[*proc]string) {
		t.Helper()
		start := time.Now()
		for p, w := range want {
			eventually(t, 45*time.Second, phase+": "+p.name+" learns the other pod CIDRs", func() string {
				if got := learnedString(p.Learned()); got != "["+w+"]" {
					return got
				}
				return ""
			})
		}
		t.Logf("%s: converged in %v", phase, time.Since(start).Round(10*time.Millisecond))
	}
	mesh := func() {
		a.Apply(mk(addrA, 0, bgp.Neighbor{Address: addr(addrB)}, bgp.Neighbor{Address: addr(addrC)}))
		b.Apply(mk(addrB, 1, bgp.Neighbor{Address: addr(addrA)}, bgp.Neighbor{Address: addr(addrC)}))
		c.Apply(mk(addrC, 2, bgp.Neighbor{Address: addr(addrA)}, bgp.Neighbor{Address: addr(addrB2)}))
	}
	meshWant := map[*proc]string{
		a: "10.244.2.0/24 via 10.99.0.2 from 10.99.0.2, 10.244.3.0/24 via 10.98.0.3 from 10.98.0.3",
		b: "10.244.1.0/24 via 10.99.0.1 from 10.99.0.1, 10.244.3.0/24 via 10.98.0.3 from 10.98.0.3",
		c: "10.244.1.0/24 via 10.99.0.1 from 10.99.0.1, 10.244.2.0/24 via 10.98.0.2 from 10.98.0.2",
	}
	mesh()
	converge("full mesh", meshWant)

	a.Apply(mk(addrA, 0, bgp.Neighbor{Address: addr(addrB)}))
	b.Apply(mk(addrB, 1, bgp.Neighbor{Address: addr(addrA), RouteReflectorClient: true, ClusterID: addr(addrB)},
		bgp.Neighbor{Address: addr(addrC), RouteReflectorClient: true, ClusterID: addr(addrB)}))
	c.Apply(mk(addrC, 2, bgp.Neighbor{Address: addr(addrB2)}))
	converge("route reflector", map[*proc]string{
		a: "10.244.2.0/24 via 10.99.0.2 from 10.99.0.2, 10.244.3.0/24 via 10.98.0.3 from 10.99.0.2",
		b: "10.244.1.0/24 via 10.99.0.1 from 10.99.0.1, 10.244.3.0/24 via 10.98.0.3 from 10.98.0.3",
		c: "10.244.1.0/24 via 10.99.0.1 from 10.98.0.2, 10.244.2.0/24 via 10.98.0.2 from 10.98.0.2",
	})
	if ps := a.Peers(); len(ps) != 1 {
		t.Fatalf("A still peers with %+v", ps)
	}

	mesh()
	converge("full mesh again", meshWant)
}

// TestKernelSpeakerBFDDetectsFailure: with BFD (100 ms × 3) a cut link
// takes the session down, and the neighbour's routes away, within about a
// second, against the 90 s hold time; GoBGP does so even with graceful
// restart negotiated (BFD down is not a graceful-restart event in GoBGP).
func TestKernelSpeakerBFDDetectsFailure(t *testing.T) {
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	a := startSpeaker(t, na, "a")
	b := startSpeaker(t, nb, "b")
	bfd := bgp.BFD{Enabled: true, MinRx: 100 * time.Millisecond, MinTx: 100 * time.Millisecond, DetectMultiplier: 3}
	da := node(addrA, addrB, 64512, 65000, time.Minute, nil, nil)
	da.Neighbors[0].BFD = bfd
	db := node(addrB, addrA, 65000, 64512, time.Minute, []string{"198.18.100.0/24"}, []string{"198.18.100.0/24"})
	db.Neighbors[0].BFD = bfd
	a.Apply(da)
	b.Apply(db)
	eventually(t, 30*time.Second, "BFD up, GR negotiated, route learned", func() string {
		p, _ := peerOf(a.Peers(), addrB)
		if p.State != bgp.StateEstablished || p.BFD != "Up" || p.GracefulRestart != "Negotiated" {
			return fmt.Sprintf("%+v", p)
		}
		if got := prefixes(a.Learned()); got != "198.18.100.0/24" {
			return got
		}
		return ""
	})
	if out, err := nb.Exec("ip", "link", "set", "ul0", "down"); err != nil {
		t.Fatalf("cut the link: %v %s", err, out)
	}
	cut := time.Now()
	eventually(t, 10*time.Second, "A drops B's route after the cut", func() string {
		if got := a.Learned(); len(got) != 0 {
			return learnedString(got)
		}
		return ""
	})
	took := time.Since(cut)
	p, _ := peerOf(a.Peers(), addrB)
	t.Logf("MEASURE BFD: route withdrawn %v after the link cut; A's view %+v", took.Round(10*time.Millisecond), p)
	if took > 3*time.Second {
		t.Fatalf("withdrawal took %v with BFD 100 ms × 3", took)
	}
	if p.State == bgp.StateEstablished || p.BFD != "Down" || p.Reason != "BFDDown" {
		t.Fatalf("after BFD down: %+v", p)
	}
}

// TestKernelSpeakerIPv6: an IPv6 session carries IPv6 paths; the next hop
// of a path originated with "::" is the session's own address.
func TestKernelSpeakerIPv6(t *testing.T) {
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	for n, a := range map[*netnstest.Node]string{na: "fd99::1/64", nb: "fd99::2/64"} {
		if out, err := n.Exec("ip", "addr", "add", a, "dev", "ul0", "nodad"); err != nil {
			t.Fatalf("address %s: %v %s", a, err, out)
		}
	}
	a := startSpeaker(t, na, "a")
	b := startSpeaker(t, nb, "b")
	mk := func(self, self6, other6 string, asn, otherASN uint32, path string) bgp.Desired {
		return bgp.Desired{Enabled: true,
			Global: bgp.Global{ASN: asn, RouterID: addr(self), ListenAddresses: []netip.Addr{addr(self), addr(self6)}},
			Neighbors: []bgp.Neighbor{{Address: addr(other6), ASN: otherASN, ConnectRetry: time.Second,
				Families: []bgp.Family{bgp.IPv6Unicast}, Export: []netip.Prefix{pfx(path)}}},
			Paths:  []bgp.Path{{Prefix: pfx(path), Communities: []string{"64512:7"}}},
			Import: bgp.ImportPolicy{MaxPrefixes: 10}}
	}
	a.Apply(mk(addrA, "fd99::1", "fd99::2", 64512, 65000, "fd00:10:0:1::/64"))
	b.Apply(mk(addrB, "fd99::2", "fd99::1", 65000, 64512, "2001:db8:100::/48"))
	established(t, a, "fd99::2", 30*time.Second)
	eventually(t, 15*time.Second, "IPv6 paths both ways", func() string {
		la, lb := learnedString(a.Learned()), learnedString(b.Learned())
		if la != "[2001:db8:100::/48 via fd99::2 from fd99::2]" || lb != "[fd00:10:0:1::/64 via fd99::1 from fd99::1]" {
			return "A " + la + " B " + lb
		}
		return ""
	})
}
