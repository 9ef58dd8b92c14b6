//go:build kernel

package policy_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/drops"
)

// ifaceResolver names pods by host interface index and address (what the
// agent reads from its pod-interface watch and pod informer).
type ifaceResolver struct {
	byIndex map[uint32]string
	byAddr  map[netip.Addr]string
}

func (r ifaceResolver) Interface(i uint32) (string, string) {
	if p, ok := r.byIndex[i]; ok {
		return "trl-" + p, p
	}
	return "", ""
}
func (r ifaceResolver) PodByIP(a netip.Addr) string       { return r.byAddr[a] }
func (r ifaceResolver) Policies(pod, dir string) []string { return []string{"from-resolver"} }

// TestKernelDropsReaderDecodesDenyLog: the agent's nflog reader, bound to
// the deny-log group of a node namespace programmed with the compiled
// policy table, receives a record for a TCP connection denied on ingress
// and one denied on egress, each read within 500 ms of the connect (the reader asks for
// no batching), decoded to the right pods, addresses, port, protocol,
// direction and group; a second reader of the same group is refused with
// ErrGroupBusy (one listener per group).
func TestKernelDropsReaderDecodesDenyLog(t *testing.T) {
	const group = 4712
	w := singleNodeWorld(t)
	w.denyLogGroup = group
	w.addNamespace("x", map[string]string{"ns": "x"})
	w.addPod("x", "a", "n1", "10.244.1.30", false, map[string]string{"pod": "a"})
	w.addPod("x", "b", "n1", "10.244.1.31", false, map[string]string{"pod": "b"})
	w.addPod("x", "c", "n1", "10.244.1.32", false, map[string]string{"pod": "c"})
	w.addPolicy(np("x", "a-no-ingress", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), PolicyTypes: ingressOnly}))
	w.addPolicy(np("x", "b-no-egress", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "b"), PolicyTypes: egressOnly}))

	k := newKernelNode(t)
	res := ifaceResolver{byIndex: map[uint32]string{}, byAddr: map[netip.Addr]string{}}
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		name := p.Namespace + "/" + p.Name
		addr := netip.MustParseAddr(p.Status.PodIP)
		k.addPod(name, ifaceFor(p), addr)
		k.serve(name, 80)
		res.byAddr[addr] = name
		if err := k.node.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(ifaceFor(p))
			if err == nil {
				res.byIndex[uint32(l.Attrs().Index)] = name
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	k.apply(w)

	var r *drops.Reader
	if err := k.node.Do(func(ns.NetNS) error {
		var err error
		r, err = drops.Open(group)
		return err
	}); err != nil {
		t.Fatalf("FAIL: open the nflog group (needs nfnetlink_log): %v", err)
	}
	defer r.Close()
	if err := k.node.Do(func(ns.NetNS) error {
		r2, err := drops.Open(group)
		if err == nil {
			r2.Close()
			return errors.New("a second reader bound the same nflog group")
		}
		if !errors.Is(err, drops.ErrGroupBusy) {
			return err
		}
		t.Logf("second reader refused as expected: %v", err)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	src, err := drops.NewSource(drops.Config{Node: "n1", Group: group, Ring: drops.NewRing(10, 0, nil), Resolver: res})
	if err != nil {
		t.Fatal(err)
	}

	// receive waits for the first record that decodes, at most 2 s, and
	// returns it with the time it was read.
	type got struct {
		d  agentapi.Drop
		at time.Time
	}
	receive := func(out chan<- got) {
		defer close(out)
		if err := r.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Error(err)
			return
		}
		for {
			recs, err := r.Receive()
			if err != nil {
				t.Errorf("no deny-log record within 2 s: %v", err)
				return
			}
			for i := range recs {
				if d, ok := src.Decode(&recs[i]); ok {
					out <- got{d, time.Now()}
					return
				}
				t.Logf("record not decoded: %+v", recs[i])
			}
		}
	}

	for _, c := range []struct {
		from, to, toAddr, dir, pod string
	}{
		{"x/c", "x/a", "10.244.1.30", "ingress", "x/a"},
		{"x/b", "x/c", "10.244.1.32", "egress", "x/b"},
	} {
		ch := make(chan got, 1)
		go receive(ch)
		sent := time.Now()
		if k.connect(c.from, netip.Addr{}, netip.MustParseAddr(c.toAddr), 80) {
			t.Fatalf("%s -> %s:80 should be denied", c.from, c.to)
		}
		g, ok := <-ch
		if !ok {
			t.FailNow()
		}
		d, lat := g.d, g.at.Sub(sent)
		if d.Src.Pod != c.from || d.Dst.Pod != c.to || d.Dst.IP != c.toAddr || d.Dst.Port != 80 || d.Src.Port == 0 ||
			d.Protocol != "TCP" || d.Direction != c.dir || d.Verdict != drops.VerdictPolicy || d.Pod != c.pod ||
			!strings.HasPrefix(d.Group, map[string]string{"ingress": "ing-", "egress": "eg-"}[c.dir]) {
			t.Fatalf("%s -> %s: decoded %+v", c.from, c.to, d)
		}
		// Without queue threshold 1 the kernel would batch for up to 1 s.
		if lat > 500*time.Millisecond {
			t.Fatalf("%s -> %s: record read %v after the connect started, want < 500 ms", c.from, c.to, lat)
		}
		t.Logf("%s -> %s: %s %s/%s %s group %s, read %v after the connect started", c.from, c.to, d.Direction, d.Dst.IP, d.Protocol, d.Verdict, d.Group, lat)
	}
}
