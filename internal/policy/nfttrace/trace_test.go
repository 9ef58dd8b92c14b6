package nfttrace

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func newTable(t *testing.T, build func(tx *knftables.Transaction)) *knftables.Fake {
	t.Helper()
	f := knftables.NewFake(knftables.InetFamily, "t")
	tx := f.NewTransaction()
	tx.Add(&knftables.Table{})
	build(tx)
	if err := f.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	return f
}

func base(tx *knftables.Transaction, name string, hook knftables.BaseChainHook, policy knftables.BaseChainPolicy) {
	tx.Add(&knftables.Chain{Name: name, Type: knftables.PtrTo(knftables.FilterType), Hook: &hook,
		Priority: knftables.PtrTo(knftables.FilterPriority), Policy: &policy})
}

func pkt(src, dst string, proto uint8, dport uint16) Packet {
	return Packet{Hook: "forward", IIF: "trlaaa", OIF: "eth0", Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
		Proto: proto, DPort: dport, CTState: "new"}
}

func TestTraceVocabulary(t *testing.T) {
	f := newTable(t, func(tx *knftables.Transaction) {
		base(tx, "fwd", knftables.ForwardHook, knftables.AcceptPolicy)
		tx.Add(&knftables.Chain{Name: "sub"})
		tx.Add(&knftables.Chain{Name: "deny"})
		tx.Add(&knftables.Set{Name: "s", Type: "ipv4_addr . inet_proto . inet_service", Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		tx.Add(&knftables.Map{Name: "m", Type: "ifname : verdict"})
		tx.Add(&knftables.Element{Set: "s", Key: []string{"10.0.0.0/24", "tcp", "80-81"}})
		tx.Add(&knftables.Element{Set: "s", Key: []string{"10.0.1.1-10.0.1.3", "udp", "53"}})
		tx.Add(&knftables.Element{Map: "m", Key: []string{`"trlaaa"`}, Value: []string{"goto sub"}})
		tx.Add(&knftables.Rule{Chain: "fwd", Rule: `ct state established,related accept`})
		tx.Add(&knftables.Rule{Chain: "fwd", Rule: `iifname "trl*" iifname vmap @m`})
		tx.Add(&knftables.Rule{Chain: "fwd", Rule: `ip daddr 10.9.9.9 drop`}) // unsupported literal
		tx.Add(&knftables.Rule{Chain: "sub", Rule: `ip daddr . meta l4proto . th dport @s return`})
		tx.Add(&knftables.Rule{Chain: "sub", Rule: `counter drop`})
	})
	cases := []struct {
		name string
		p    Packet
		want Verdict
	}{
		{"in range prefix and port range", pkt("1.1.1.1", "10.0.0.7", 6, 81), Accept},
		{"port outside range", pkt("1.1.1.1", "10.0.0.7", 6, 82), Drop},
		{"protocol differs", pkt("1.1.1.1", "10.0.0.7", 132, 80), Drop},
		{"address range", pkt("1.1.1.1", "10.0.1.3", 17, 53), Accept},
		{"outside address range", pkt("1.1.1.1", "10.0.1.4", 17, 53), Drop},
		{"no ports (icmp) never matches th dport", pkt("1.1.1.1", "10.0.0.7", 1, 80), Drop},
	}
	for _, tc := range cases {
		got, err := Trace(f, tc.p)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: got %s want %s", tc.name, got, tc.want)
		}
	}
	// established packets stop at the first rule; other interfaces miss the
	// vmap and reach the literal comparison the tracer does not support.
	est := pkt("1.1.1.1", "10.0.0.7", 1, 0)
	est.CTState = "established"
	if v, err := Trace(f, est); err != nil || v != Accept {
		t.Errorf("established: %v %v", v, err)
	}
	other := pkt("1.1.1.1", "10.0.0.7", 6, 80)
	other.IIF = "eth1"
	if _, err := Trace(f, other); err == nil || !strings.Contains(err.Error(), "unsupported literal") {
		t.Errorf("unsupported rule must be an error, got %v", err)
	}
}

func TestTraceJumpReturnsGotoDoesNot(t *testing.T) {
	f := newTable(t, func(tx *knftables.Transaction) {
		base(tx, "in", knftables.InputHook, knftables.DropPolicy)
		tx.Add(&knftables.Chain{Name: "ret"})
		tx.Add(&knftables.Rule{Chain: "ret", Rule: "return"})
		tx.Add(&knftables.Rule{Chain: "in", Rule: `iifname "a" jump ret`})
		tx.Add(&knftables.Rule{Chain: "in", Rule: `iifname "a" accept`})
		tx.Add(&knftables.Rule{Chain: "in", Rule: `iifname "b" goto ret`})
		tx.Add(&knftables.Rule{Chain: "in", Rule: `accept`})
	})
	p := Packet{Hook: "input", Src: netip.MustParseAddr("1.1.1.1"), Dst: netip.MustParseAddr("2.2.2.2"), Proto: 6, DPort: 1, CTState: "new"}
	p.IIF = "a"
	if v, err := Trace(f, p); err != nil || v != Accept {
		t.Errorf("jump then return continues in the caller: %v %v", v, err)
	}
	p.IIF = "b"
	if v, err := Trace(f, p); err != nil || v != Drop {
		t.Errorf("goto then return ends the base chain (policy drop): %v %v", v, err)
	}
	p.Hook = "output"
	if v, err := Trace(f, p); err != nil || v != Accept {
		t.Errorf("no chain on the hook accepts: %v %v", v, err)
	}
}

func TestValidateRejectsWhatTheKernelWould(t *testing.T) {
	overlap := newTable(t, func(tx *knftables.Transaction) {
		tx.Add(&knftables.Set{Name: "s", Type: "ipv4_addr", Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		tx.Add(&knftables.Element{Set: "s", Key: []string{"10.0.0.0/24"}})
		tx.Add(&knftables.Element{Set: "s", Key: []string{"10.0.0.128-10.0.1.1"}})
	})
	if err := Validate(overlap); err == nil {
		t.Error("overlapping interval elements accepted")
	}
	noInterval := newTable(t, func(tx *knftables.Transaction) {
		tx.Add(&knftables.Set{Name: "s", Type: "inet_service"})
		tx.Add(&knftables.Element{Set: "s", Key: []string{"80-81"}})
	})
	if err := Validate(noInterval); err == nil {
		t.Error("range in a non-interval set accepted")
	}
	ok := newTable(t, func(tx *knftables.Transaction) {
		tx.Add(&knftables.Set{Name: "s", Type: "ipv4_addr . inet_service", Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		tx.Add(&knftables.Element{Set: "s", Key: []string{"10.0.0.0/24", "80"}})
		tx.Add(&knftables.Element{Set: "s", Key: []string{"10.0.0.0/24", "81-90"}})
	})
	if err := Validate(ok); err != nil {
		t.Errorf("disjoint elements rejected: %v", err)
	}
}

// TestTracePendingVocabulary covers fib reverse-path, nfproto and device
// group matches.
func TestTracePendingVocabulary(t *testing.T) {
	f := newTable(t, func(tx *knftables.Transaction) {
		base(tx, "fwd", knftables.ForwardHook, knftables.AcceptPolicy)
		tx.Add(&knftables.Chain{Name: "spoof"})
		tx.Add(&knftables.Set{Name: "g", Type: "devgroup"})
		tx.Add(&knftables.Element{Set: "g", Key: []string{"default"}})
		tx.Add(&knftables.Element{Set: "g", Key: []string{"77"}})
		tx.Add(&knftables.Rule{Chain: "fwd", Rule: `iifname "trl*" jump spoof`})
		tx.Add(&knftables.Rule{Chain: "fwd", Rule: `fib daddr . iif oif exists accept`})
		tx.Add(&knftables.Rule{Chain: "fwd", Rule: `iifgroup @g drop`})
		tx.Add(&knftables.Rule{Chain: "fwd", Rule: `oifgroup @g counter drop`})
		tx.Add(&knftables.Rule{Chain: "spoof", Rule: `meta nfproto ipv4 fib saddr . iif oif exists return`})
		tx.Add(&knftables.Rule{Chain: "spoof", Rule: `counter drop`})
	})
	p := func(mod func(*Packet)) Packet {
		x := pkt("10.0.0.1", "10.0.0.2", 6, 80)
		x.SrcRoute, x.IIFGroup, x.OIFGroup = "trlaaa", 5, 6
		mod(&x)
		return x
	}
	cases := []struct {
		name string
		p    Packet
		want Verdict
	}{
		{"route back through iif, other groups", p(func(*Packet) {}), Accept},
		{"route back through another iface", p(func(x *Packet) { x.SrcRoute = "trlbbb" }), Drop},
		{"no route back", p(func(x *Packet) { x.SrcRoute = "" }), Drop},
		{"ipv6 from a pod", p(func(x *Packet) { x.Src = netip.MustParseAddr("fe80::1") }), Drop},
		{"not from a pod: no fib check", p(func(x *Packet) { x.IIF, x.SrcRoute = "eth0", "" }), Accept},
		{"iif group listed", p(func(x *Packet) { x.IIFGroup = 77 }), Drop},
		{"oif group 0 listed as default", p(func(x *Packet) { x.OIFGroup = 0 }), Drop},
		{"hairpin (out the interface it came in) accepted first", p(func(x *Packet) { x.OIF, x.OIFGroup = x.IIF, 0 }), Accept},
	}
	for _, tc := range cases {
		got, err := Trace(f, tc.p)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}
