package policy_test

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
)

// ifaceOf is the interface the plugin would give pod p.
func ifaceOf(p *corev1.Pod) podlink.Interface {
	return podlink.Interface{Name: ifaceFor(p), Addrs: []netip.Addr{netip.MustParseAddr(p.Status.PodIP)},
		Alias: podlink.Alias{PodNamespace: p.Namespace, PodName: p.Name}}
}

var churnSeeds = flag.Int("policy.churn-seeds", 80, "random change sequences TestCompilerMatchesCompile runs")

// churn is a cluster whose objects are replaced, never modified, as an
// informer's are: the input of a Compiler across a sequence of changes.
type churn struct {
	g        gen
	w        *world
	pods     []*corev1.Pod
	policies []*networkingv1.NetworkPolicy
	nss      []*corev1.Namespace
	next     int
	logGroup uint16
}

func newChurn(seed int64) *churn {
	c := &churn{g: gen{rand.New(rand.NewSource(seed))}}
	c.w = c.g.world()
	for i := range c.w.cluster.Pods {
		p := c.w.cluster.Pods[i]
		c.pods = append(c.pods, &p)
	}
	for i := range c.w.cluster.Policies {
		np := c.w.cluster.Policies[i]
		c.policies = append(c.policies, &np)
	}
	for i := range c.w.cluster.Namespaces {
		ns := c.w.cluster.Namespaces[i]
		c.nss = append(c.nss, &ns)
	}
	c.next = 100
	return c
}

// step makes one random change and says which.
func (c *churn) step() string {
	g := c.g
	switch k := g.r.Intn(10); {
	case k < 3 || len(c.pods) == 0: // a pod appears (sometimes reusing an address)
		c.next++
		node := g.pick("n1", "n2")
		ip := fmt.Sprintf("10.244.%d.%d", map[string]int{"n1": 1, "n2": 2}[node], c.next%250+1)
		lbl := map[string]string{"pod": g.pick("a", "b", "c")}
		if g.r.Intn(2) == 0 {
			lbl["app"] = g.pick("web", "db")
		}
		p := &corev1.Pod{}
		tmp := newWorld()
		tmp.addPod(g.pick("x", "y", "z"), fmt.Sprintf("q%d", c.next), node, ip, false, lbl,
			corev1.ContainerPort{Name: "serve", ContainerPort: int32([]int{80, 81, 8080}[g.r.Intn(3)]), Protocol: corev1.ProtocolTCP})
		*p = tmp.cluster.Pods[0]
		c.pods = append(c.pods, p)
		return "pod added " + p.Name + " " + ip
	case k < 5: // a pod goes
		i := g.r.Intn(len(c.pods))
		name := c.pods[i].Name
		c.pods = append(c.pods[:i:i], c.pods[i+1:]...)
		return "pod deleted " + name
	case k < 7: // a pod's labels or ports change
		i := g.r.Intn(len(c.pods))
		p := c.pods[i].DeepCopy()
		p.Labels = maps.Clone(p.Labels)
		p.Labels["pod"] = g.pick("a", "b", "c")
		if g.r.Intn(3) == 0 && len(p.Spec.Containers) > 0 {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "serve", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
		}
		c.pods[i] = p
		return "pod changed " + p.Name
	case k < 8: // a policy is added, replaced or deleted
		c.next++
		np := g.policy(c.next)
		switch {
		case len(c.policies) > 0 && g.r.Intn(3) == 0:
			i := g.r.Intn(len(c.policies))
			c.policies = append(c.policies[:i:i], c.policies[i+1:]...)
			return "policy deleted"
		case len(c.policies) > 0 && g.r.Intn(2) == 0:
			i := g.r.Intn(len(c.policies))
			np.Namespace, np.Name = c.policies[i].Namespace, c.policies[i].Name
			c.policies[i] = &np
			return "policy replaced " + np.Name
		}
		c.policies = append(c.policies, &np)
		return "policy added " + np.Name
	case k < 9: // a namespace's labels change
		i := g.r.Intn(len(c.nss))
		ns := c.nss[i].DeepCopy()
		ns.Labels["team"] = g.pick("red", "blue", "green")
		c.nss[i] = ns
		return "namespace relabelled " + ns.Name
	default:
		if g.r.Intn(4) == 0 {
			c.logGroup = uint16(g.r.Intn(2)) * 100
			return "deny log group changed"
		}
		return "nothing changed"
	}
}

// snapshot is the compiler's input for node, built the way the controller
// builds it (SnapshotFromAPI, one interface per local pod).
func (c *churn) snapshot(node string) *policy.Snapshot {
	var ifaces []podlink.Interface
	for _, p := range c.pods {
		if p.Spec.NodeName == node && !p.Spec.HostNetwork {
			ifaces = append(ifaces, ifaceOf(p))
		}
	}
	s := policy.SnapshotFromAPI(node, c.pods, c.nss, c.policies, ifaces)
	s.DenyLogGroup = c.logGroup
	return s
}

// canonical is a sorted dump with the groups named by their pods
// (policy.CanonicalGroupNames), sorted again.
func canonical(dump string) string {
	return strings.Join(sortLines(policy.CanonicalGroupNames(dump)), "\n")
}

// tableOf is the table d builds from scratch, sorted.
func tableOf(t *testing.T, d *policy.Desired) string {
	t.Helper()
	f := knftables.NewFake(knftables.InetFamily, policy.TableName)
	if _, err := policy.Apply(context.Background(), f, d); err != nil {
		t.Fatal(err)
	}
	return sortedDump(f)
}

// TestCompilerMatchesCompile: a Compiler fed one change after another
// (pods, policies, namespaces, the deny log) compiles what Compile compiles
// from scratch, and applying its output by diffing against its previous
// output (what the controller does) gives the table built from scratch.
func TestCompilerMatchesCompile(t *testing.T) {
	for seed := int64(1); seed <= int64(*churnSeeds); seed++ {
		c := newChurn(seed)
		comp := policy.NewCompiler()
		kernel := knftables.NewFake(knftables.InetFamily, policy.TableName)
		var prev *policy.Desired
		var log []string
		for step := 0; step < 40; step++ {
			log = append(log, c.step())
			snap := c.snapshot("n1")
			got := comp.Compile(snap)
			want := canonical(tableOf(t, policy.Compile(c.snapshot("n1"))))
			if have := canonical(tableOf(t, got)); have != want {
				t.Fatalf("seed %d step %d: the Compiler's table differs from Compile's after %v:\n%s\n---\n%s", seed, step, log, have, want)
			}
			opts := policy.ApplyOptions{Previous: prev, TrustGroupSets: true}
			if _, err := policy.ApplyWith(context.Background(), kernel, got, opts); err != nil {
				t.Fatalf("seed %d step %d: apply from the previous state: %v (after %v)", seed, step, err, log)
			}
			if have := canonical(sortedDump(kernel)); have != want {
				t.Fatalf("seed %d step %d: the table updated from the previous state differs from a fresh build after %v:\n%s\n---\n%s",
					seed, step, log, have, want)
			}
			prev = got
		}
	}
}
