//go:build e2e

package resilience

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/kube"
	labnode "github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// outageEnv sets how long the API server stays away (a Go duration).
const outageEnv = "TRELLIS_E2E_APISERVER_OUTAGE"

// The API server away for minutes (TRELLIS_E2E_APISERVER_OUTAGE, default
// 5m) changes nothing, checked while it is away:
//   - pods keep talking across nodes and on one node, and a default-deny
//     namespace stays enforced (continuous probes, every outcome counted);
//   - a pod whose sandbox dies is re-created by the kubelet from its own
//     cache, gets an address, talks, and its policy applies to it;
//   - no agent changes its nftables tables or routes (compared with what
//     they held before), not even an agent restarted while the API server
//     is away.
//
// Once it is back, a NetworkPolicy created at once is enforced within one
// resync interval of the agents' configuration, everywhere.
func TestE2EAPIServerAway(t *testing.T) {
	outage := 5 * time.Minute
	if v := os.Getenv(outageEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration", outageEnv, v)
		}
		outage = d
	}
	resync := agentResync(t)
	nA, nB := pair(t)
	ctx := context.Background()

	// open: no policy. locked: ingress only from pods labelled role=friend.
	open := l.Namespace(t, "away-open", nil)
	locked := l.Namespace(t, "away-locked", nil)
	_, err := l.CS.NetworkingV1().NetworkPolicies(locked).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "friends-only"},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"role": "friend"}},
			}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	refs := l.CreatePods(t, open, []framework.PodSpec{
		{Name: "friend", Node: nA, Labels: map[string]string{"role": "friend"}},
		{Name: "stranger", Node: nB},
	}, 120*time.Second)
	refs = append(refs, l.CreatePods(t, locked, []framework.PodSpec{{Name: "sa", Node: nA}, {Name: "sb", Node: nB}}, 120*time.Second)...)
	pod := map[string]*corev1.Pod{}
	netns := map[string]string{}
	addr := map[string]netip.Addr{}
	for _, r := range refs {
		p := l.Pod(t, r)
		pod[p.Name], netns[p.Name], addr[p.Name] = p, l.PodNetns(t, r), netip.MustParseAddr(p.Status.PodIP)
	}
	fl := func(from, to string, allow bool) flow {
		return flow{name: from + "->" + to, from: netns[from], to: addr[to], allow: allow}
	}
	flows := []flow{
		fl("friend", "stranger", true), fl("stranger", "friend", true), // across nodes, no policy
		fl("friend", "sa", true), fl("friend", "sb", true), // same node and across, allowed
		fl("stranger", "sb", false), fl("stranger", "sa", false), // same node and across, denied
	}
	settle(t, flows)
	nodes := l.Nodes()
	before := stableDataplanes(t, nodes)

	// The outage.
	stopAPIServer(t)
	start := time.Now()
	p := startProber(flows)
	unchanged := func(when string) {
		t.Helper()
		for _, n := range nodes {
			if d := firstDiff(before[n], dataplane(t, n)); d != "" {
				t.Errorf("the agent on %s changed its dataplane with the API server away (%s); first difference at %s", n, when, d)
			}
		}
	}
	time.Sleep(min(10*time.Second, outage/10))
	unchanged("before any pod or agent event")

	// The sandbox of locked/sb dies; the kubelet re-creates it.
	p.remove("friend->sb", "stranger->sb")
	sbNew := recreateSandbox(t, nB, pod["sb"])
	netns["sb"], addr["sb"] = fmt.Sprintf("/proc/%d/ns/net", sbNew.pid), sbNew.addr
	t.Logf("sandbox of %s re-created by the kubelet with %s after %v (was %s)", refs[3], sbNew.addr, sbNew.took.Round(time.Millisecond), pod["sb"].Status.PodIP)
	sbFlows := []flow{fl("friend", "sb", true), fl("stranger", "sb", false), fl("sb", "friend", true)}
	// The new sandbox is wired and its policy applies.
	if took := within(30*time.Second, sbFlows); took > 30*time.Second {
		for _, f := range sbFlows {
			if msg := f.check(); msg != "" {
				t.Errorf("re-created sandbox, 30s after: %s", msg)
			}
		}
	} else {
		t.Logf("re-created sandbox: its flows as expected %v after it had an address", took.Round(time.Millisecond))
		p.set(sbFlows...)
	}
	before = stableDataplanes(t, nodes)

	// The agent on nB restarts with no API server to read from.
	oldAgents := cgroupProcs(nodeCgroup(nB), "trellis-agent")
	if len(oldAgents) != 1 {
		t.Fatalf("agent processes on %s: %v, want one", nB, oldAgents)
	}
	if err := syscall.Kill(oldAgents[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	agents := map[int]bool{}
	waitUntil(t, 60*time.Second, "a new agent process on "+nB, func() bool {
		for _, pid := range cgroupProcs(nodeCgroup(nB), "trellis-agent") {
			if pid != oldAgents[0] {
				agents[pid] = true
				return true
			}
		}
		return false
	})
	t.Logf("agent on %s killed (pid %d) and restarted by the kubelet %v into the outage", nB, oldAgents[0], time.Since(start).Round(time.Second))

	// The rest of the outage: the dataplanes stay as they were.
	for time.Since(start) < outage {
		time.Sleep(min(15*time.Second, max(time.Until(start.Add(outage)), 0)))
		for _, pid := range cgroupProcs(nodeCgroup(nB), "trellis-agent") {
			agents[pid] = true
		}
		unchanged(fmt.Sprintf("at %v", time.Since(start).Round(time.Second)))
	}
	rounds, probes, failures := p.finish()
	t.Logf("%v without the API server: %d probe rounds (%s); %d agent processes on %s after the kill",
		time.Since(start).Round(time.Second), rounds, summary(probes), len(agents), nB)
	for _, f := range failures {
		t.Errorf("during the outage: %s", f)
	}
	if running := cgroupProcs(nodeCgroup(nB), "trellis-agent"); len(running) == 0 {
		t.Errorf("no agent runs on %s at the end of the outage", nB)
	}
	if len(agents) > 1 {
		// Each lives at least three liveness periods: 15 s samples see them all.
		t.Errorf("the agent on %s, waiting for the API server, was started %d times after the kill: the kubelet kept killing it",
			nB, len(agents))
	}

	// The API server is back: an object only it knows is enforced within
	// one resync, on every node.
	startAPIServer(t)
	back := time.Now()
	_, err = l.CS.NetworkingV1().NetworkPolicies(open).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-all"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := []flow{fl("friend", "stranger", false), fl("stranger", "friend", false), fl("sb", "friend", false),
		fl("friend", "sb", true), fl("stranger", "sb", false)}
	converged := within(2*resync, after) // measured beyond the bound, to say by how much
	for _, f := range after {
		if msg := f.check(); msg != "" {
			t.Errorf("%v after the API server came back: %s", time.Since(back).Round(time.Second), msg)
		}
	}
	t.Logf("API server back: new policy enforced on %s and %s after %v (resync interval %v)",
		nA, nB, converged.Round(time.Millisecond), resync)
	if converged > resync {
		t.Errorf("after the API server came back the agents took %v to enforce a new NetworkPolicy, more than one resync (%v)", converged, resync)
	}
	if err := kube.Poll(ctx, 250*time.Millisecond, max(resync-time.Since(back), 5*time.Second), func(ctx context.Context) (bool, error) {
		sb, err := l.CS.CoreV1().Pods(locked).Get(ctx, "sb", metav1.GetOptions{})
		return err == nil && sb.Status.PodIP == sbNew.addr.String() && kube.PodReady(sb), nil
	}); err != nil {
		t.Errorf("%s does not report its re-created sandbox's address %s within one resync: %v", refs[3], sbNew.addr, err)
	}
	if l.AgentPod() {
		if _, err := install.AgentPod(ctx, l.CS, nB); err != nil {
			t.Error(err)
		}
	}
}

// agentResync returns the agents' periodic resync interval
// (maxSyncInterval) from their configuration.
func agentResync(t *testing.T) time.Duration {
	t.Helper()
	c := &config.Config{}
	if l.AgentPod() {
		cm, err := l.CS.CoreV1().ConfigMaps(install.Namespace).Get(context.Background(), install.ConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := config.ParseFile([]byte(cm.Data[install.ConfigKey]), c); err != nil {
			t.Fatal(err)
		}
	} else {
		// Process mode: the node's own file (internal/lab/node).
		spec, err := labnode.LoadSpec(l.Paths.Node(l.Nodes()[0]) + "/node.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := config.LoadFile(spec.HostPath("/etc/trellis/config.yaml"), c); err != nil {
			t.Fatalf("the process-mode agent configuration: %v", err)
		}
	}
	c.ApplyDefaults()
	return c.MaxSyncInterval.Duration
}

// settle waits until every flow has its expected outcome.
func settle(t *testing.T, flows []flow) {
	t.Helper()
	if took := within(30*time.Second, flows); took > 30*time.Second {
		for _, f := range flows {
			if msg := f.check(); msg != "" {
				t.Error(msg)
			}
		}
		t.Fatalf("the flows did not reach their expected outcomes within 30s")
	}
}

// within returns how long it took until every flow had its expected
// outcome, or more than limit if they never did.
func within(limit time.Duration, flows []flow) time.Duration {
	start := time.Now()
	for time.Since(start) <= limit {
		ok := true
		for _, f := range flows {
			if f.check() != "" {
				ok = false
				break
			}
		}
		if ok {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return limit + time.Second
}

// stableDataplanes snapshots every node's dataplane once it stops
// changing (a sync triggered by the last pod event may be in flight).
func stableDataplanes(t *testing.T, nodes []string) map[string]string {
	t.Helper()
	snap := func() map[string]string {
		m := map[string]string{}
		for _, n := range nodes {
			m[n] = dataplane(t, n)
		}
		return m
	}
	prev := snap()
	for i := 0; i < 20; i++ {
		time.Sleep(time.Second)
		cur := snap()
		same := true
		for n := range cur {
			same = same && cur[n] == prev[n]
		}
		if same {
			return cur
		}
		prev = cur
	}
	t.Fatal("the nodes' dataplanes keep changing with nothing happening")
	return nil
}

func labCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(l.Bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("trellis-lab %v: %v\n%s", args, err, out)
	}
}

// stopAPIServer stops the API server (trellis-lab stop-apiserver) and makes
// sure it runs again when the test ends.
func stopAPIServer(t *testing.T) {
	t.Helper()
	labCmd(t, "stop-apiserver")
	t.Cleanup(func() {
		if err := kube.WaitAPIServer(context.Background(), l.CS, time.Second); err != nil {
			_ = exec.Command(l.Bin, "start-apiserver").Run()
		}
	})
	if err := kube.WaitAPIServer(context.Background(), l.CS, time.Second); err == nil {
		t.Fatal("the API server still answers after stop-apiserver")
	}
}

func startAPIServer(t *testing.T) { t.Helper(); labCmd(t, "start-apiserver") }

type sandbox struct {
	pid  int // the pod's agnhost process in the new sandbox
	addr netip.Addr
	took time.Duration
}

// recreateSandbox kills the pause process of pod's sandbox on node (the
// sandbox dies; the container's network namespace stays until the kubelet
// removes it) and waits, with no API server, until the kubelet has started
// the pod's container again in a new sandbox with an address.
func recreateSandbox(t *testing.T, node string, pod *corev1.Pod) sandbox {
	t.Helper()
	cg := podCgroup(t, node, string(pod.UID))
	pauses := cgroupProcs(cg, "pause")
	agn := cgroupProcs(cg, "agnhost")
	if len(pauses) != 1 || len(agn) != 1 {
		t.Fatalf("pod %s/%s: pause %v, agnhost %v: want one of each", pod.Namespace, pod.Name, pauses, agn)
	}
	// The new sandbox's namespace may get the old one's inode number (the
	// kernel reuses them): the new sandbox is told by its new processes.
	oldAgn, oldPause := agn[0], pauses[0]
	start := time.Now()
	if err := syscall.Kill(pauses[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var sb sandbox
	waitUntil(t, 120*time.Second, "the kubelet re-creates the sandbox of "+pod.Name, func() bool {
		for _, pid := range cgroupProcs(cg, "agnhost") {
			if id, pause := netnsID(pid), pauseOf(cg, netnsID(pid)); pid != oldAgn && id != "" && pause > 0 && pause != oldPause {
				if a, err := eth0Addr(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil {
					sb = sandbox{pid: pid, addr: a, took: time.Since(start)}
					return true
				}
			}
		}
		return false
	})
	return sb
}

// pauseOf returns the pause process in cg whose network namespace is id.
func pauseOf(cg, id string) int {
	for _, pid := range cgroupProcs(cg, "pause") {
		if netnsID(pid) == id {
			return pid
		}
	}
	return -1
}
