//go:build kernel

package policy_test

import (
	"context"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/nfttrace"
)

// TestKernelTraceOfListedTable: the table a real kernel holds, listed with
// `nft list table` and loaded back by nfttrace.FromListing (what the agent's
// trace endpoint walks), decides every pod pair, protocol and port of the
// property worlds as the reference evaluator does.
func TestKernelTraceOfListedTable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("FAIL: this kernel test needs root (network namespace, nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("FAIL: this kernel test needs the nft binary (apt-get install nftables)")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) })
	const seeds = 40
	err = netns.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, policy.TableName)
		if err != nil {
			t.Fatalf("knftables: %v", err)
		}
		ctx := context.Background()
		elements := 0
		for seed := int64(1); seed <= seeds; seed++ {
			w := gen{rand.New(rand.NewSource(*propSeed + seed))}.world()
			w.denyLogGroup = uint16(seed % 2 * 7) // with and without the deny log
			w.program(t)
			for _, n := range w.nodes {
				if _, err := policy.Apply(ctx, nft, policy.Compile(w.snapshot(n))); err != nil {
					t.Fatalf("seed %d node %s: apply: %v", seed, n, err)
				}
				out, err := exec.Command("nft", "list", "table", "inet", policy.TableName).CombinedOutput()
				if err != nil {
					t.Fatalf("nft list table: %v: %s", err, out)
				}
				elements += strings.Count(string(out), ",")
				fake, err := nfttrace.FromListing(knftables.InetFamily, policy.TableName, string(out))
				if err != nil {
					t.Fatalf("seed %d node %s: %v\nlisting:\n%s", seed, n, err, out)
				}
				w.fakes[n] = fake
			}
			if mm := w.mismatches(t, propertyProbes); len(mm) > 0 {
				t.Fatalf("seed %d: the listed table decides %d cases unlike the oracle:\n%s\n%s", seed, len(mm), strings.Join(mm, "\n"), describe(w))
			}
		}
		if elements == 0 {
			t.Fatal("no listing held a set element: the parser was never exercised on elements")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
