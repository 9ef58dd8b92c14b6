//go:build kernel

package policy_test

import (
	"context"
	"math/rand"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"sigs.k8s.io/knftables"

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
			st, err := policy.Apply(ctx, nft, d)
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
