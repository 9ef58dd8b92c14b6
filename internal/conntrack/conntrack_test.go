package conntrack

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellisnet/trellis/internal/podlink"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func iface(index int, name string, as ...string) podlink.Interface {
	return podlink.Interface{Index: index, Name: name, Addrs: addrs(as...)}
}

func TestGone(t *testing.T) {
	a := iface(10, "trlaaaaaaaaaaa", "10.244.1.2", "fd00::2")
	b := iface(11, "trlbbbbbbbbbbb", "10.244.1.3")
	c := iface(12, "trlccccccccccc", "10.244.1.4")
	for _, tc := range []struct {
		name      string
		prev, cur []podlink.Interface
		want      []netip.Addr
	}{
		{"nothing before, nothing now", nil, nil, nil},
		{"first list", nil, []podlink.Interface{a, b}, nil},
		{"unchanged", []podlink.Interface{a, b}, []podlink.Interface{a, b}, nil},
		{"a new pod takes nothing away", []podlink.Interface{a}, []podlink.Interface{a, b}, nil},
		{"a pod deleted releases all its addresses", []podlink.Interface{a, b}, []podlink.Interface{b}, addrs("10.244.1.2", "fd00::2")},
		{"every pod gone", []podlink.Interface{a, b, c}, nil, addrs("10.244.1.2", "10.244.1.3", "10.244.1.4", "fd00::2")},
		{"a host route removed, the interface stays", []podlink.Interface{a}, []podlink.Interface{iface(10, "trlaaaaaaaaaaa", "fd00::2")}, addrs("10.244.1.2")},
		{"an address moved to another pod's interface", []podlink.Interface{a, b}, []podlink.Interface{iface(10, "trlaaaaaaaaaaa", "fd00::2"), iface(11, "trlbbbbbbbbbbb", "10.244.1.2", "10.244.1.3")}, addrs("10.244.1.2")},
		{"deleted and reused in one relist (new interface)", []podlink.Interface{b}, []podlink.Interface{iface(13, "trlddddddddddd", "10.244.1.3")}, addrs("10.244.1.3")},
		{"same index, another attachment's name", []podlink.Interface{b}, []podlink.Interface{iface(11, "trlddddddddddd", "10.244.1.3")}, addrs("10.244.1.3")},
		{"same name, a new device (index)", []podlink.Interface{b}, []podlink.Interface{iface(14, "trlbbbbbbbbbbb", "10.244.1.3")}, addrs("10.244.1.3")},
		{"IPv4-mapped forms are one address", []podlink.Interface{iface(11, "trlbbbbbbbbbbb", "::ffff:10.244.1.3")}, []podlink.Interface{b}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Gone(tc.prev, tc.cur)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Gone = %v, want %v", got, tc.want)
			}
		})
	}
}

// An address briefly on two interfaces (a route replaced between dumps)
// neither flaps nor hides the move once it is complete.
func TestGoneAddressOnTwoInterfaces(t *testing.T) {
	a := iface(10, "trlaaaaaaaaaaa", "10.244.1.2")
	both := []podlink.Interface{a, iface(11, "trlbbbbbbbbbbb", "10.244.1.2")}
	if got := Gone([]podlink.Interface{a}, both); got != nil {
		t.Errorf("still on its interface (and another): Gone = %v, want nothing", got)
	}
	if got := Gone(both, []podlink.Interface{iface(11, "trlbbbbbbbbbbb", "10.244.1.2")}); !slices.Equal(got, addrs("10.244.1.2")) {
		t.Errorf("move completed: Gone = %v, want [10.244.1.2]", got)
	}
}

type fakeKernel struct {
	calls [][]netip.Addr
	fail  error
	n     int
}

func (k *fakeKernel) DeleteAddrs(a []netip.Addr) (int, error) {
	k.calls = append(k.calls, slices.Clone(a))
	return k.n, k.fail
}

func TestControllerDeletesWhatWentAwayAndRetriesFailures(t *testing.T) {
	k := &fakeKernel{n: 3}
	reg := prometheus.NewRegistry()
	c, err := New(Config{Kernel: k, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := iface(10, "trlaaaaaaaaaaa", "10.244.1.2")
	b := iface(11, "trlbbbbbbbbbbb", "10.244.1.3")

	// The first list is the baseline: nothing is deleted.
	c.InterfacesChanged([]podlink.Interface{a, b})
	if err := c.Sync(ctx); err != nil || len(k.calls) != 0 {
		t.Fatalf("after the first list: sync %v, kernel calls %v; want none", err, k.calls)
	}
	// a goes; the kernel fails once: the address stays pending.
	k.fail = errors.New("netlink: boom")
	c.InterfacesChanged([]podlink.Interface{b})
	if err := c.Sync(ctx); err == nil {
		t.Fatal("sync hid the kernel's error")
	}
	if got := c.Pending(); !slices.Equal(got, addrs("10.244.1.2")) {
		t.Fatalf("pending after a failure = %v, want [10.244.1.2]", got)
	}
	if got := testutil.ToFloat64(c.errors); got != 1 {
		t.Errorf("trellis_conntrack_delete_errors_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.waiting); got != 1 {
		t.Errorf("trellis_conntrack_pending_addresses = %v, want 1", got)
	}
	// Meanwhile b's address moves to a new interface; the retry deletes both.
	k.fail = nil
	c.InterfacesChanged([]podlink.Interface{iface(12, "trlccccccccccc", "10.244.1.3")})
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if last := k.calls[len(k.calls)-1]; !slices.Equal(last, addrs("10.244.1.2", "10.244.1.3")) {
		t.Errorf("retry deleted %v, want [10.244.1.2 10.244.1.3]", last)
	}
	if got := c.Pending(); len(got) != 0 {
		t.Errorf("pending after success = %v, want none", got)
	}
	// 3 entries from the failed attempt (it reported them), 3 from the retry.
	if got := testutil.ToFloat64(c.deleted); got != 6 {
		t.Errorf("trellis_conntrack_deleted_entries_total = %v, want 6", got)
	}
	if got := testutil.ToFloat64(c.waiting); got != 0 {
		t.Errorf("trellis_conntrack_pending_addresses = %v, want 0", got)
	}
	// Nothing pending: a sync (the periodic resync) does not call the kernel.
	n := len(k.calls)
	if err := c.Sync(ctx); err != nil || len(k.calls) != n {
		t.Errorf("idle sync: %v, %d kernel calls, want none", err, len(k.calls)-n)
	}
	if cnt, err := testutil.GatherAndCount(reg); err != nil || cnt != 3 {
		t.Errorf("registered metrics: %d (%v), want 3", cnt, err)
	}
}

func TestNewNeedsAKernel(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a Kernel succeeded")
	}
}
