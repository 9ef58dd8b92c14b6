//go:build kernel

package policy_test

import (
	"context"
	"math/rand"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"golang.org/x/sys/unix"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/policy"
)

// TestKernelPolicyTableApplies loads compiled tables into a real nftables
// (in a throwaway network namespace): the kernel accepts every generated
// table, an in-place update to another state succeeds, and a second sync of
// the same state changes nothing — which proves the element keys we write
// compare equal to what nft lists back.
func TestKernelPolicyTableApplies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("FAIL: this kernel test needs root (network namespace, nftables)")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) })
	err = netns.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, policy.TableName)
		if err != nil {
			t.Fatalf("knftables: %v", err)
		}
		ctx := context.Background()
		for seed := int64(1); seed <= 25; seed++ {
			w := gen{rand.New(rand.NewSource(seed))}.world()
			d := policy.Compile(w.snapshot("n1"))
			if _, err := policy.Apply(ctx, nft, d); err != nil {
				t.Fatalf("seed %d: apply: %v", seed, err)
			}
			// Group sets are named by what their allow list depends on, not
			// by content: the re-apply passes the committed state and reads
			// every other set and map back from the kernel.
			st, err := policy.ApplyWith(ctx, nft, d, policy.ApplyOptions{Previous: d, ReadBack: true})
			if err != nil {
				t.Fatalf("seed %d: re-apply: %v", seed, err)
			}
			if st.ElementsAdded+st.ElementsDeleted+st.ChainsCreated+st.ObjectsDeleted != 0 {
				t.Fatalf("seed %d: re-applying the same state changed things: %+v", seed, st)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKernelPolicyScale measures syncs against real nftables at the issue's
// scale (10,000 pods, 1,000 policies, 100 local pods): first programming, a
// no-op resync that reads every group set back, a trusted no-op resync, the
// resync after one policy changed, and a full rewrite (the table guard's
// repair).
func TestKernelPolicyScale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("FAIL: this kernel test needs root (network namespace, nftables)")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) })
	snap := scaleSnapshot(10000, 1000)
	err = netns.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, policy.TableName)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// The table guard's watch must keep up with these transactions
		// (a lost notification would make the controller rewrite the table,
		// whose notifications would be lost again...).
		watch, err := nftwatch.Open(unix.NFPROTO_INET, policy.TableName)
		if err != nil {
			return err
		}
		var mu sync.Mutex
		lost, seen := -1, 0 // the start counts as one loss
		watchDone := make(chan error, 1)
		go func() {
			watchDone <- watch.Run(ctx, func(ch nftwatch.Change) {
				mu.Lock()
				defer mu.Unlock()
				if ch.Lost {
					lost++
				} else {
					seen++
				}
			})
		}()
		defer func() {
			cancel()
			if err := <-watchDone; err != nil {
				t.Errorf("watch: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			t.Logf("table guard's watch: %d transactions seen, %d losses", seen, lost)
			if lost > 0 || seen < 9 {
				t.Errorf("the watch lost notifications %d times (saw %d transactions, want >= 9) at this scale", lost, seen)
			}
		}()
		// Group sets are named by what their allow list depends on, not by
		// their content, so a sync without the last committed state
		// rewrites them: the verifying and trusted syncs pass it (last).
		var last *policy.Desired
		verify := func() policy.ApplyOptions { return policy.ApplyOptions{Previous: last, ReadBack: true} }
		trusted := func() policy.ApplyOptions {
			return policy.ApplyOptions{Previous: last, ReadBack: true, TrustGroupSets: true}
		}
		timed := func(what string, opts policy.ApplyOptions, s *policy.Snapshot) policy.ApplyStats {
			start := time.Now()
			d := policy.Compile(s)
			st, err := policy.ApplyWith(ctx, nft, d, opts)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			last = d
			t.Logf("%-28s %8v  (%d operations, %d groups)", what, time.Since(start).Round(time.Millisecond), st.Operations, len(d.Groups))
			return st
		}
		timed("first programming", policy.ApplyOptions{}, snap)
		if st := timed("no-op resync, verify sets", verify(), snap); st.ElementsAdded+st.ElementsDeleted != 0 {
			t.Fatalf("no-op resync changed elements: %+v", st)
		}
		if st := timed("no-op resync, trusted", trusted(), snap); st.ElementsAdded+st.ElementsDeleted != 0 {
			t.Fatalf("trusted no-op resync changed elements: %+v", st)
		}
		changed := *snap
		changed.Policies = append([]*networkingv1.NetworkPolicy(nil), snap.Policies[1:]...)
		timed("one policy deleted, trusted", trusted(), &changed)
		// The controller's steady state: diff against the last committed
		// state, no read-back.
		prev := policy.Compile(&changed)
		if st := timed("no-op resync, from previous", policy.ApplyOptions{TrustGroupSets: true, Previous: prev}, &changed); st.ElementsAdded+st.ElementsDeleted != 0 {
			t.Fatalf("no-op resync from the previous state changed elements: %+v", st)
		}
		timed("one policy back, from previous", policy.ApplyOptions{TrustGroupSets: true, Previous: prev}, snap)
		// The kernel must hold exactly what a verifying sync computes.
		if st := timed("no-op resync, verify sets", verify(), snap); st.ElementsAdded+st.ElementsDeleted+st.ChainsCreated+st.ObjectsDeleted != 0 {
			t.Fatalf("a sync from the previous state left the kernel different: %+v", st)
		}
		// The table guard's repair: the whole table rewritten atomically.
		timed("full rewrite (repair)", policy.ApplyOptions{Rewrite: true}, snap)
		if st := timed("no-op resync, verify sets", verify(), snap); st.ElementsAdded+st.ElementsDeleted+st.ChainsCreated+st.ObjectsDeleted != 0 {
			t.Fatalf("a full rewrite left the kernel different from a verifying sync: %+v", st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
