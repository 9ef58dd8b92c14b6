//go:build kernel

package policy_test

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/policy"
)

// fixedLocalScale is a cluster of pods pods whose local part does not
// depend on the size: the same localPods local pods on n0 (10.0.0.1…),
// the others on n1…, from 10.1.0.1 on, and the 1,000 policies of
// scaleSnapshot. Only the peer sets grow with pods.
func fixedLocalScale(pods int) *policy.Snapshot {
	s := &policy.Snapshot{NodeName: "n0", Policies: scaleSnapshot(0, 1000).Policies}
	for i := 0; i < 100; i++ {
		s.Namespaces = append(s.Namespaces, policy.Namespace{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"kubernetes.io/metadata.name": fmt.Sprintf("ns%d", i), "team": fmt.Sprintf("t%d", i%10)}})
	}
	local, remote := rand.New(rand.NewSource(1)), rand.New(rand.NewSource(2))
	for i := 0; i < pods; i++ {
		r, node, ip := remote, fmt.Sprintf("n%d", 1+i/100), u32Addr(10<<24|1<<16+uint32(i-localPods)+1)
		if i < localPods {
			r, node, ip = local, "n0", u32Addr(10<<24+uint32(i)+1)
		}
		p := policy.Pod{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("p%d", i),
			Labels:   map[string]string{"app": fmt.Sprintf("app%d", r.Intn(20)), "tier": fmt.Sprintf("tier%d", r.Intn(3))},
			IPs:      []netip.Addr{ip},
			NodeName: node,
			Ports:    []policy.ContainerPort{{Name: "http", Protocol: "TCP", Port: int32(8000 + r.Intn(3))}}}
		if i < localPods {
			p.Interface = fmt.Sprintf("trl%011x", i)
		}
		s.Pods = append(s.Pods, p)
	}
	return s
}

// localPods is the number of local pods of fixedLocalScale (their groups'
// first programming at 100,000 pods is what the test's time goes to).
const localPods = 20

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// changeCost is what one change cost the controller's path: compile with
// the Compiler that compiled the previous state, and apply from it.
type changeCost struct {
	ops             int
	compile, commit time.Duration
	total           time.Duration
}

// TestKernelPolicyChangeSizeIndependentOfPods: with 1,000 policies and the
// same 20 local pods, one pod added elsewhere (a peer set changes) and one
// policy updated (a peer added to a rule) give transactions of the same
// number of operations at 10,000 and at 100,000 pods, on real nftables,
// applied the way the controller applies them (a Compiler, diffed against
// the previous commit); a verifying sync afterwards finds the kernel
// exactly as desired. Deleting and re-creating a policy, which changes
// which policies select pods and so renames their groups, writes those
// groups whole: its size is logged, not asserted.
func TestKernelPolicyChangeSizeIndependentOfPods(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("FAIL: this kernel test needs root (network namespace, nftables)")
	}
	costs := map[int]map[string]changeCost{}
	for _, pods := range []int{10000, 100000} {
		costs[pods] = measureChanges(t, pods)
	}
	for _, what := range []string{"pod added", "policy updated"} {
		a, b := costs[10000][what], costs[100000][what]
		if a.ops != b.ops || a.ops == 0 || a.ops > 400 {
			t.Errorf("%s: %d operations at 10,000 pods, %d at 100,000: want equal (and small)", what, a.ops, b.ops)
		}
	}
}

func measureChanges(t *testing.T, pods int) map[string]changeCost {
	t.Helper()
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) }()
	out := map[string]changeCost{}
	err = netns.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, policy.TableName)
		if err != nil {
			return err
		}
		ctx := context.Background()
		comp := policy.NewCompiler()
		snap := fixedLocalScale(pods)
		var prev *policy.Desired
		step := func(what string, s *policy.Snapshot) {
			start := time.Now()
			d := comp.Compile(s)
			compiled := time.Since(start)
			st, err := policy.ApplyWith(ctx, nft, d, policy.ApplyOptions{Previous: prev, TrustGroupSets: true})
			if err != nil {
				t.Fatalf("%d pods, %s: %v", pods, what, err)
			}
			c := changeCost{ops: st.Operations, compile: compiled, commit: st.Commit, total: time.Since(start)}
			out[what] = c
			t.Logf("%6d pods  %-22s %6d operations  compile %8v  commit %8v  total %8v", pods, what, c.ops,
				c.compile.Round(time.Microsecond), c.commit.Round(time.Microsecond), c.total.Round(time.Microsecond))
			prev, snap = d, s
		}
		step("first programming", snap)

		added := *snap
		added.Pods = append(append([]policy.Pod(nil), snap.Pods...), policy.Pod{Namespace: "ns5", Name: "new",
			Labels: map[string]string{"app": "app3", "tier": "tier0"}, IPs: []netip.Addr{netip.MustParseAddr("10.200.0.1")},
			NodeName: "n7", Ports: []policy.ContainerPort{{Name: "http", Protocol: "TCP", Port: 8001}}})
		step("pod added", &added)

		// A policy selecting local pods gets one more ingress peer.
		k := selectingLocal(t, prev)
		updated := *snap
		updated.Policies = append([]*networkingv1.NetworkPolicy(nil), snap.Policies...)
		np := updated.Policies[k].DeepCopy()
		np.Spec.Ingress[0].From = append(np.Spec.Ingress[0].From,
			networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.77.0/24"}})
		updated.Policies[k] = np
		step("policy updated", &updated)

		full := snap
		deleted := *full
		deleted.Policies = append(append([]*networkingv1.NetworkPolicy(nil), full.Policies[:k]...), full.Policies[k+1:]...)
		step("policy deleted", &deleted)
		step("policy re-created", full)

		st, err := policy.ApplyWith(ctx, nft, policy.Compile(snap), policy.ApplyOptions{Previous: prev, ReadBack: true})
		if err != nil {
			t.Fatal(err)
		}
		if st.ElementsAdded+st.ElementsDeleted+st.ChainsCreated+st.ObjectsDeleted != 0 {
			t.Fatalf("%d pods: a verifying sync found the kernel differing from the desired state: %+v", pods, st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// selectingLocal is the index of a policy that one of d's groups names.
func selectingLocal(t *testing.T, d *policy.Desired) int {
	t.Helper()
	for _, name := range sortedGroupNames(d) {
		for _, key := range d.Groups[name].Policies {
			for i, np := range scaleSnapshot(0, 1000).Policies {
				if np.Namespace+"/"+np.Name == key && len(np.Spec.Ingress) > 0 {
					return i
				}
			}
		}
	}
	t.Fatal("no policy selects a local pod")
	return 0
}

func sortedGroupNames(d *policy.Desired) []string {
	var out []string
	for name := range d.Groups {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
