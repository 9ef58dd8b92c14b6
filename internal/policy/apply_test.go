package policy_test

import (
	"context"
	"flag"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/nfttrace"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

func goldenWorlds() map[string]*world {
	empty := xyzWorld()
	mixed := xyzWorld()
	mixed.addPolicy(np("x", "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: both}))
	mixed.addPolicy(np("x", "from-y-named", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "y")}},
			Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("serve-81-tcp"), nil), port(udp, intstr.FromInt32(80), nil)}}}}))
	mixed.addPolicy(np("x", "egress-cidr", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly, PodSelector: *sel("pod", "c"),
		Egress: []networkingv1.NetworkPolicyEgressRule{{
			To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.0/16", Except: []string{"10.244.2.0/24"}}}}}}}))
	logged := xyzWorld()
	logged.cluster.Policies = mixed.cluster.Policies
	logged.denyLogGroup = 100
	return map[string]*world{"no-policies": empty, "xyz-mixed": mixed, "xyz-mixed-deny-log": logged}
}

func TestGoldenTables(t *testing.T) {
	for name, w := range goldenWorlds() {
		t.Run(name, func(t *testing.T) {
			w.program(t)
			got := w.fakes["n1"].Dump()
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("table differs from %s (rerun with -update after checking):\n--- got\n%s", path, got)
			}
		})
	}
}

// sortedDump is the fake's dump with lines sorted: element order differs
// between a table built from scratch and one updated in place.
func sortedDump(f *knftables.Fake) string {
	return strings.Join(sortLines(f.Dump()), "\n")
}

// TestApplyIsIdempotent: a second sync of the same state from the state the
// first committed (the controller's steady state, with and without reading
// the table back) changes no element and creates or deletes nothing; one
// without any previous state (what a restarted agent without its table
// guard does) rewrites the group sets, whose ranges cannot be read back,
// and nothing else, leaving the same table.
func TestApplyIsIdempotent(t *testing.T) {
	w := goldenWorlds()["xyz-mixed"]
	w.program(t)
	before := w.fakes["n1"].Dump()
	prev := policy.Compile(w.snapshot("n1"))
	for _, opts := range []policy.ApplyOptions{{Previous: prev, TrustGroupSets: true}, {Previous: prev, ReadBack: true}, {}} {
		st, err := policy.ApplyWith(context.Background(), w.fakes["n1"], policy.Compile(w.snapshot("n1")), opts)
		if err != nil {
			t.Fatal(err)
		}
		if after := w.fakes["n1"].Dump(); after != before {
			t.Fatalf("%+v: second sync changed the table:\n%s\n---\n%s", opts, before, after)
		}
		tx := w.fakes["n1"].LastTransaction.String()
		if strings.Contains(tx, "flush table") || strings.Contains(tx, "flush map") {
			t.Fatalf("%+v: sync flushed a table or map:\n%s", opts, tx)
		}
		if opts.Previous == nil {
			for _, line := range strings.Split(tx, "\n") {
				if strings.HasPrefix(line, "flush set") && !strings.Contains(line, "-all") && !strings.Contains(line, "-ports") {
					t.Fatalf("sync without previous state flushed a set that is not a group's: %s", line)
				}
			}
			continue
		}
		if st.ElementsAdded+st.ElementsDeleted+st.ChainsCreated+st.ObjectsDeleted != 0 || strings.Contains(tx, "flush set") {
			t.Fatalf("%+v: second sync changed things: %+v\n%s", opts, st, tx)
		}
	}
}

// TestApplyConverges: updating a table in place from any state to any other
// gives exactly the table built from scratch (stale objects are deleted).
func TestApplyConverges(t *testing.T) {
	for seed := int64(1); seed <= 60; seed++ {
		g := gen{rand.New(rand.NewSource(seed))}
		w1, w2 := g.world(), g.world()
		w1.program(t)
		w2.fakes = map[string]*knftables.Fake{"n1": w1.fakes["n1"], "n2": w1.fakes["n2"]}
		w2.program(t)
		fresh := newWorld()
		fresh.cluster = w2.cluster
		fresh.program(t)
		for _, n := range w2.nodes {
			if a, b := sortedDump(w2.fakes[n]), sortedDump(fresh.fakes[n]); a != b {
				t.Fatalf("seed %d node %s: in-place update differs from a fresh build:\n%s\n---\n%s", seed, n, a, b)
			}
		}
		if mm := w2.mismatches(t, defaultProbes); len(mm) > 0 {
			t.Fatalf("seed %d: after update, %d mismatches:\n%s", seed, len(mm), strings.Join(mm, "\n"))
		}
	}
}

// TestPendingAndSpoofedPackets covers first-packet isolation and
// anti-spoofing. A trl interface the agent has not programmed (pending) is
// dropped in a direction only if its device group (its namespace) is one a
// policy of that direction could select a pod in; group 0 (namespace
// unknown) if such a policy exists anywhere; and always when it uses an
// address the agent attributes to a pod (stale address reuse). A packet
// whose source address does not route back through its interface is
// dropped whatever the policies say, pending or not.
func TestPendingAndSpoofedPackets(t *testing.T) {
	w := xyzWorld()
	w.addPolicy(np("x", "deny-ingress", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly}))
	w.program(t)
	xa, xc, yc := w.pod(t, "x/a"), w.pod(t, "x/c"), w.pod(t, "y/c")
	fake := w.fakes["n1"]
	a, c, ycIP := netip.MustParseAddr(xa.Status.PodIP), netip.MustParseAddr(xc.Status.PodIP), netip.MustParseAddr(yc.Status.PodIP)
	remote, node := netip.MustParseAddr("10.244.2.20"), netip.MustParseAddr("192.168.0.1")
	pend, pendIP := "trl00000000000", netip.MustParseAddr("10.244.1.99")
	gx, gy := podlink.GroupForNamespace("x"), podlink.GroupForNamespace("y")
	fwd := func(iif, oif string, src, dst netip.Addr, mod ...func(*nfttrace.Packet)) nfttrace.Packet {
		p := nfttrace.Packet{Hook: "forward", IIF: iif, OIF: oif, Src: src, Dst: dst, Proto: 6, DPort: 80, CTState: "new", SrcRoute: underlayIface}
		if podlink.IsHostName(iif) {
			p.SrcRoute = iif
		}
		for _, m := range mod {
			m(&p)
		}
		return p
	}
	group := func(in, out uint32) func(*nfttrace.Packet) {
		return func(p *nfttrace.Packet) { p.IIFGroup, p.OIFGroup = in, out }
	}
	routedVia := func(iface string) func(*nfttrace.Packet) { return func(p *nfttrace.Packet) { p.SrcRoute = iface } }
	established := func(p *nfttrace.Packet) { p.CTState = "established" }
	cases := []struct {
		name string
		pkt  nfttrace.Packet
		want nfttrace.Verdict
	}{
		{"programmed y pod to programmed y pod", fwd(ifaceFor(yc), ifaceFor(w.pod(t, "y/a")), ycIP, netip.MustParseAddr(w.pod(t, "y/a").Status.PodIP)), nfttrace.Accept},
		{"programmed pod to isolated pod", fwd(ifaceFor(yc), ifaceFor(xc), ycIP, c), nfttrace.Drop},
		{"spoofed source", fwd(ifaceFor(xa), ifaceFor(yc), c, ycIP, routedVia(ifaceFor(xc))), nfttrace.Drop},
		{"spoofed source riding conntrack", fwd(ifaceFor(xa), ifaceFor(yc), c, ycIP, routedVia(ifaceFor(xc)), established), nfttrace.Drop},
		{"spoofed external source", fwd(ifaceFor(xa), underlayIface, netip.MustParseAddr("8.8.8.8"), remote, routedVia(underlayIface)), nfttrace.Drop},
		{"spoofed source to host", nfttrace.Packet{Hook: "input", IIF: ifaceFor(xa), Src: c, Dst: node, Proto: 17, DPort: 53, CTState: "new", SrcRoute: ifaceFor(xc)}, nfttrace.Drop},
		{"pending pod in y sends", fwd(pend, ifaceFor(yc), pendIP, ycIP, group(gy, gy)), nfttrace.Accept},
		{"pending pod in y receives", fwd(ifaceFor(yc), pend, ycIP, pendIP, group(gy, gy)), nfttrace.Accept},
		{"pending pod in y receives from remote", fwd(underlayIface, pend, remote, pendIP, group(0, gy)), nfttrace.Accept},
		{"pending pod in y spoofs", fwd(pend, ifaceFor(yc), c, ycIP, group(gy, gy), routedVia(ifaceFor(xc))), nfttrace.Drop},
		{"pending pod in y uses a known pod's address", fwd(pend, ifaceFor(yc), a, ycIP, group(gy, gy)), nfttrace.Drop},
		{"known pod's address on a pending y pod receives", fwd(ifaceFor(yc), pend, ycIP, a, group(gy, gy)), nfttrace.Drop},
		{"pending pod in x sends (no egress policy)", fwd(pend, ifaceFor(yc), pendIP, ycIP, group(gx, gy)), nfttrace.Accept},
		{"pending pod in x receives", fwd(ifaceFor(yc), pend, ycIP, pendIP, group(gy, gx)), nfttrace.Drop},
		{"pending pod in x receives from remote", fwd(underlayIface, pend, remote, pendIP, group(0, gx)), nfttrace.Drop},
		{"pending pod of unknown namespace receives", fwd(ifaceFor(yc), pend, ycIP, pendIP, group(gy, 0)), nfttrace.Drop},
		{"pending pod of unknown namespace sends", fwd(pend, ifaceFor(yc), pendIP, ycIP, group(0, gy)), nfttrace.Accept},
		{"node probes pending isolated pod", nfttrace.Packet{Hook: "output", OIF: pend, OIFGroup: gx, Src: node, Dst: pendIP, Proto: 6, DPort: 80, CTState: "new"}, nfttrace.Accept},
		{"reply to allowed flow", fwd(underlayIface, ifaceFor(xa), remote, a, established), nfttrace.Accept},
		{"isolated pod reaches itself through its Service (hairpin)", fwd(ifaceFor(xa), ifaceFor(xa), a, a), nfttrace.Accept},
		{"isolated pod is reached by another through its Service", fwd(ifaceFor(yc), ifaceFor(xa), ycIP, a), nfttrace.Drop},
	}
	for _, tc := range cases {
		got, err := nfttrace.Trace(fake, tc.pkt)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestPerPacketPathIsConstant: the rules a packet can traverse do not grow
// with policies or pods; only set and map contents do.
func TestPerPacketPathIsConstant(t *testing.T) {
	small := xyzWorld()
	small.addPolicy(np("x", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: both}))
	small.program(t)
	big := gen{rand.New(rand.NewSource(7))}.world()
	for i := 0; i < 200; i++ {
		big.addPolicy(gen{rand.New(rand.NewSource(int64(i)))}.policy(100 + i))
	}
	big.program(t)
	for _, w := range []*world{small, big} {
		tbl := w.fakes["n1"].Table
		for name, c := range tbl.Chains {
			if len(c.Rules) > 7 { // both families: a few rules each
				t.Errorf("chain %s has %d rules", name, len(c.Rules))
			}
		}
	}
}

// TestApplyRepairsDrift: an element removed from a group set or from
// pod-ifaces by someone else is put back by the next sync.
func TestApplyRepairsDrift(t *testing.T) {
	w := goldenWorlds()["xyz-mixed"]
	w.program(t)
	fake := w.fakes["n1"]
	want := fake.Dump()
	tx := fake.NewTransaction()
	for name, s := range fake.Table.Sets {
		if len(s.Elements) > 0 {
			tx.Delete(&knftables.Element{Set: name, Key: s.Elements[0].Key})
		}
	}
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if fake.Dump() == want {
		t.Fatal("test did not change the table")
	}
	w.program(t)
	if a, b := sortedDump(fake), strings.Join(sortLines(want), "\n"); a != b {
		t.Fatalf("drift not repaired:\n%s\n---\n%s", a, b)
	}
}

func sortLines(s string) []string {
	l := strings.Split(s, "\n")
	sort.Strings(l)
	return l
}

// TestRemove: disabling enforcement deletes the table; removing an absent
// table is not an error.
func TestRemove(t *testing.T) {
	w := goldenWorlds()["xyz-mixed"]
	w.program(t)
	fake := w.fakes["n1"]
	for i := 0; i < 2; i++ {
		if err := policy.Remove(context.Background(), fake); err != nil {
			t.Fatalf("remove #%d: %v", i+1, err)
		}
		if fake.Table != nil {
			t.Fatalf("remove #%d: table still there:\n%s", i+1, fake.Dump())
		}
	}
}

// TestApplyFromPrevious: updating a table by diffing against the state the
// previous Apply committed (no read-back) gives exactly the table built
// from scratch, stale groups included.
func TestApplyFromPrevious(t *testing.T) {
	for seed := int64(1); seed <= 40; seed++ {
		g := gen{rand.New(rand.NewSource(seed))}
		w1, w2 := g.world(), g.world()
		w1.program(t)
		fresh := newWorld()
		fresh.cluster = w2.cluster
		fresh.program(t)
		for _, n := range w1.nodes {
			prev := policy.Compile(w1.snapshot(n))
			// The controller's steady state, and its periodic verification.
			opts := policy.ApplyOptions{TrustGroupSets: true, Previous: prev}
			if seed%2 == 0 {
				opts = policy.ApplyOptions{ReadBack: true, Previous: prev}
			}
			if _, err := policy.ApplyWith(context.Background(), w1.fakes[n], policy.Compile(w2.snapshot(n)), opts); err != nil {
				t.Fatal(err)
			}
			if a, b := sortedDump(w1.fakes[n]), sortedDump(fresh.fakes[n]); a != b {
				t.Fatalf("seed %d node %s: update from the previous state differs from a fresh build:\n%s\n---\n%s", seed, n, a, b)
			}
		}
	}
}
