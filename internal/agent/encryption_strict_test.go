package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/syncrunner"
	"github.com/trellisnet/trellis/internal/wireguard/strict"
)

var policyTable = podlink.NFTable{Family: "inet", Name: policy.TableName}

// flips counts the calls of the change callback.
type flips struct{ n int }

func (f *flips) fn() { f.n++ }

func ready(t *testing.T, s *dataplaneStatus) (bool, bool, string) {
	t.Helper()
	return s.DataplaneReady()
}

// With strict mode the marker waits for both the policy and the strict
// controllers, names both tables, and a failure of either fails it.
func TestDataplaneStatusNeedsTheStrictTable(t *testing.T) {
	s := newDataplaneStatus(true, nil)
	var f flips
	s.onChange(f.fn)
	s.require(strict.RunnerName, "strict encryption controller", strictTable, nil)
	if got := s.DataplaneTables(); !slices.Equal(got, []podlink.NFTable{policyTable, strictTable}) {
		t.Errorf("tables %v, want the policy and the strict table", got)
	}
	if ok, failed, why := ready(t, s); ok || failed || !strings.Contains(why, "policy") {
		t.Errorf("before any sync: ready %v failed %v %q", ok, failed, why)
	}
	s.ObserveSync("policy", time.Millisecond, nil)
	if ok, failed, why := ready(t, s); ok || failed || !strings.Contains(why, "strict encryption controller has not synced") {
		t.Errorf("policy synced, strict not: ready %v failed %v %q; want not ready until the strict table is in place", ok, failed, why)
	}
	s.ObserveSync("masquerade", time.Millisecond, nil) // another runner: no part
	if ok, _, _ := ready(t, s); ok {
		t.Error("another runner's sync made the dataplane ready")
	}
	s.ObserveSync(strict.RunnerName, time.Millisecond, nil)
	if ok, failed, why := ready(t, s); !ok || failed || why != "" {
		t.Errorf("both synced: ready %v failed %v %q", ok, failed, why)
	}
	if err := s.check(); err != nil {
		t.Errorf("/readyz: %v", err)
	}
	before := f.n
	s.ObserveSync(strict.RunnerName, time.Millisecond, errors.New("nft: no such file"))
	if ok, failed, why := ready(t, s); ok || !failed || !strings.Contains(why, "strict encryption controller failing: nft: no such file") {
		t.Errorf("strict failing: ready %v failed %v %q", ok, failed, why)
	}
	if f.n != before+1 {
		t.Errorf("a flip to failing called the change callback %d times, want 1", f.n-before)
	}
	s.ObserveSync(strict.RunnerName, time.Millisecond, errors.New("still"))
	if f.n != before+1 {
		t.Error("a second failure (no flip) called the change callback")
	}
	s.ObserveSync(strict.RunnerName, time.Millisecond, nil)
	if ok, _, _ := ready(t, s); !ok || f.n != before+2 {
		t.Errorf("recovered: ready %v, callbacks %d", ok, f.n-before)
	}
}

// Without a policy controller (no nftables) the strict part alone decides;
// unavailable, it fails the dataplane for good.
func TestDataplaneStatusStrictWithoutPolicyAndUnavailable(t *testing.T) {
	s := newDataplaneStatus(false, nil)
	if ok, _, _ := ready(t, s); !ok {
		t.Fatal("no part at all: not ready (nothing to wait for)")
	}
	s.require(strict.RunnerName, "strict encryption controller", strictTable, errors.New("no nft"))
	if ok, failed, why := ready(t, s); ok || !failed || !strings.Contains(why, "no nft") {
		t.Errorf("unavailable: ready %v failed %v %q", ok, failed, why)
	}
	if got := s.DataplaneTables(); !slices.Equal(got, []podlink.NFTable{strictTable}) {
		t.Errorf("tables %v", got)
	}
}

// A marker of this boot written before strict mode was on (it does not
// name the strict table) is withdrawn until the strict controller's first
// sync: the plugin must not wire pods meanwhile. One that names it is
// kept (a restarted agent whose table is still in force).
func TestDataplaneStatusWithdrawsAMarkerWithoutTheStrictTable(t *testing.T) {
	for _, c := range []struct {
		name       string
		marker     *podlink.Dataplane
		wantFailed bool
	}{
		{"no marker", nil, false},
		{"marker without the strict table", &podlink.Dataplane{BootID: "b", Tables: []podlink.NFTable{policyTable}}, true},
		{"marker naming it", &podlink.Dataplane{BootID: "b", Tables: []podlink.NFTable{policyTable, strictTable}}, false},
	} {
		s := newDataplaneStatus(true, nil)
		s.require(strict.RunnerName, "strict encryption controller", strictTable, nil)
		s.watchMarker(func() *podlink.Dataplane { return c.marker })
		s.ObserveSync("policy", time.Millisecond, nil)
		if ok, failed, why := ready(t, s); ok || failed != c.wantFailed {
			t.Errorf("%s: ready %v failed %v (%q), want failed %v", c.name, ok, failed, why, c.wantFailed)
		}
		s.ObserveSync(strict.RunnerName, time.Millisecond, nil)
		if ok, failed, _ := ready(t, s); !ok || failed {
			t.Errorf("%s: after the strict sync: ready %v failed %v", c.name, ok, failed)
		}
	}
}

type countingObserver struct{ names []string }

func (o *countingObserver) ObserveSync(name string, _ time.Duration, _ error) {
	o.names = append(o.names, name)
}

// newStrictEncryption with strict mode on makes the strict table part of
// the dataplane, and its runner programs the table from the Nodes (and
// reports to the metrics through the dataplane status); off, it adds no
// part and its runner removes a leftover table; without nftables and
// strict on, the dataplane fails.
func TestNewStrictEncryptionWiresTheDataplane(t *testing.T) {
	client := fake.NewClientset(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: v1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24"}}},
		&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Spec: v1.NodeSpec{PodCIDRs: []string{"10.244.2.0/24"}}})
	f := informers.NewSharedInformerFactory(client, 0)
	nodeInf := f.Core().V1().Nodes()
	inf := nodeInf.Informer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())

	cfg := &config.Config{NodeName: "n1", Encryption: config.EncryptionWireGuard}
	cfg.ApplyDefaults()
	if !cfg.EncryptionStrictEnabled() {
		t.Fatal("strict mode is not on by default with encryption on")
	}
	obs := &countingObserver{}
	dp := newDataplaneStatus(true, obs)
	nft := knftables.NewFake(knftables.InetFamily, strict.TableName)
	se, err := newStrictEncryption(cfg, strictKernel{nft: nft}, inf, nodeInf.Lister(), dp, nil, syncrunner.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(se.runners) != 1 || se.watch == nil {
		t.Fatalf("runners %d, watch %v", len(se.runners), se.watch != nil)
	}
	if got := dp.DataplaneTables(); !slices.Equal(got, []podlink.NFTable{policyTable, strictTable}) {
		t.Errorf("tables %v", got)
	}
	dp.ObserveSync("policy", 0, nil)
	if ok, _, _ := dp.DataplaneReady(); ok {
		t.Error("ready before the strict controller synced")
	}
	r := se.runners[0]
	go r.Run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for ok, _, _ := dp.DataplaneReady(); !ok; ok, _, _ = dp.DataplaneReady() {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 5s after the strict runner started: %v", r.LastError())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(nft.Dump(), `oifname != "trellis.wg" counter name "unencrypted" drop`) ||
		!strings.Contains(nft.Dump(), "add element inet trellis-encrypt local { 10.244.1.0/24 }") {
		t.Errorf("table:\n%s", nft.Dump())
	}
	if !slices.Contains(obs.names, strict.RunnerName) {
		t.Errorf("the metrics observer saw %v, not the strict runner", obs.names)
	}

	// Encryption off: no part; the runner removes the table.
	off := &config.Config{NodeName: "n1"}
	off.ApplyDefaults()
	dpOff := newDataplaneStatus(true, nil)
	se, err = newStrictEncryption(off, strictKernel{nft: nft}, inf, nodeInf.Lister(), dpOff, nil, syncrunner.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dpOff.DataplaneTables(); !slices.Equal(got, []podlink.NFTable{policyTable}) {
		t.Errorf("encryption off: tables %v", got)
	}
	if len(se.runners) != 1 {
		t.Fatal("encryption off: no runner to remove a leftover table")
	}
	go se.runners[0].Run(ctx)
	for nft.Table != nil {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatal("encryption off: the table was not removed")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Strict on without nftables: failed.
	dpNo := newDataplaneStatus(true, nil)
	if _, err := newStrictEncryption(cfg, strictKernel{err: errors.New("nft not found")}, inf, nodeInf.Lister(), dpNo, nil, syncrunner.Options{}); err != nil {
		t.Fatal(err)
	}
	if ok, failed, why := dpNo.DataplaneReady(); ok || !failed || !strings.Contains(why, "nft not found") {
		t.Errorf("no nftables: ready %v failed %v %q", ok, failed, why)
	}
}
