//go:build e2e

package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/scalebench"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// Settings of TestBenchScale, from the environment (make bench-scale).
type settings struct {
	steps         []StepSize
	samples       int           // node adds and pod adds per step
	flips         int           // policy deletes + creates per step
	idle          time.Duration // idle CPU window
	createTimeout time.Duration // one step's object creation
	budget        time.Duration // the whole run: no step starts that would not end in it
	out           string        // result directory
	command       string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func loadSettings(t *testing.T) settings {
	t.Helper()
	repo := framework.RepoRoot()
	var s settings
	var err error
	if s.steps, err = ParseSteps(envOr("BENCH_SCALE_STEPS", "100/2000,1000/20000,2000/40000,5000/100000")); err != nil {
		t.Fatalf("BENCH_SCALE_STEPS: %v", err)
	}
	ints := map[string]*int{"BENCH_SCALE_SAMPLES": &s.samples, "BENCH_SCALE_FLIPS": &s.flips}
	for name, dst := range ints {
		def := map[string]string{"BENCH_SCALE_SAMPLES": "50", "BENCH_SCALE_FLIPS": "20"}[name]
		if *dst, err = strconv.Atoi(envOr(name, def)); err != nil || *dst < 1 || (name == "BENCH_SCALE_SAMPLES" && *dst > sampleRange) {
			t.Fatalf("%s: want a count from 1 (samples: up to %d), got %q", name, sampleRange, os.Getenv(name))
		}
	}
	durs := map[string]*time.Duration{"BENCH_SCALE_IDLE": &s.idle, "BENCH_SCALE_CREATE_TIMEOUT": &s.createTimeout, "BENCH_SCALE_BUDGET": &s.budget}
	for name, dst := range durs {
		def := map[string]string{"BENCH_SCALE_IDLE": "60s", "BENCH_SCALE_CREATE_TIMEOUT": "15m", "BENCH_SCALE_BUDGET": "40m"}[name]
		if *dst, err = time.ParseDuration(envOr(name, def)); err != nil || *dst <= 0 {
			t.Fatalf("%s: want a duration, got %q", name, os.Getenv(name))
		}
	}
	s.out = envOr("BENCH_SCALE_OUT", filepath.Join(repo, "bin", "bench-scale"))
	s.command = envOr("BENCH_SCALE_COMMAND", "make bench-scale")
	return s
}

// machine describes this machine for the result.
func machine() string {
	mem := "?"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0]); len(f) >= 2 {
			if kb, err := strconv.Atoi(f[1]); err == nil {
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	return fmt.Sprintf("%d cores, %s memory, kernel %s, load average at start %s",
		runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)), loadAvg())
}

// controlPlaneCPU is the CPU seconds the API server and etcd have used.
func controlPlaneCPU() map[string]float64 {
	out := map[string]float64{}
	for _, p := range l.State.Processes {
		if p.Name == "kube-apiserver" || p.Name == "etcd" {
			if ticks, _, err := procStat(p.PID); err == nil {
				out[p.Name] = float64(ticks) / clockTicks
			}
		}
	}
	return out
}

// controlPlaneRSS names the API server's and etcd's resident sets.
func controlPlaneRSS() string {
	var out []string
	for _, p := range l.State.Processes {
		if p.Name == "kube-apiserver" || p.Name == "etcd" {
			if m, err := rssMiB(p.PID); err == nil {
				out = append(out, fmt.Sprintf("%s %.0f MiB", p.Name, m))
			}
		}
	}
	return strings.Join(out, ", ")
}

func f64(v float64) *float64 { return &v }

// TestBenchScale (make bench-scale, not part of make test): one real agent
// (on the lab's first node) in a cluster grown step by step with API-only
// Nodes, Pods, Namespaces and NetworkPolicies, every scalebench.Step figure
// measured at each step; the table is printed after each step and the
// result written to $BENCH_SCALE_OUT/result.json (and table.md).
func TestBenchScale(t *testing.T) {
	if !l.HasAgent() || !l.AgentPod() {
		t.Fatalf("the scale bench needs the agent as the DaemonSet (TRELLIS_LAB_INSTALL=daemonset): %s", l.State.AgentError)
	}
	if got := l.State.Topology.Options.ClusterCIDROrDefault(); got != ClusterCIDR {
		t.Fatalf("the lab's cluster CIDR is %s: the ghosts' pod CIDRs need %s (TRELLIS_LAB_CLUSTER_CIDR=%s TRELLIS_LAB_NODE_CIDR_MASK=%d)",
			got, ClusterCIDR, ClusterCIDR, NodeCIDRMask)
	}
	set := loadSettings(t)
	ctx := context.Background()
	begin := time.Now()
	logf := func(format string, a ...any) {
		t.Logf("[%s] %s", time.Since(begin).Round(time.Second), fmt.Sprintf(format, a...))
	}
	nodes := l.Nodes()
	node := nodes[0]
	host, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	nsName := host.Netns
	subnet := l.State.Topology.Subnets[host.Subnet].Prefix
	cs, err := bulkClient()
	if err != nil {
		t.Fatal(err)
	}
	res := scalebench.Result{Started: begin.UTC(), Command: set.command, Machine: machine()}
	logf("measured agent: %s (netns %s, subnet %s); %s", node, nsName, subnet, res.Machine)

	pp, err := setupPolicyProbe(t, node, nodes[1])
	if err != nil {
		t.Fatal(err)
	}
	defer pp.stopSink()
	realPods := countAddressedPods(t)
	pid := agentPID(node)
	prevRSS, err := rssMiB(pid)
	if err != nil {
		t.Fatal(err)
	}
	prevPods := realPods
	logf("before any ghost: %d pods with addresses, agent RSS %.1f MiB", realPods, prevRSS)

	w := &world{cs: cs, subnet: subnet}
	const realPolicies = 3
	ghostPolicies := 1000 - realPolicies
	var lastStepTook time.Duration
	for k, size := range set.steps {
		ghosts := size.Nodes - len(nodes)
		ghostPods := max(size.Pods-realPods, w.pods)
		if k > 0 {
			// Will this step end within the budget? Its creation at the
			// last step's rate, its measurements as long as the last's.
			prev := res.Steps[len(res.Steps)-1]
			rate := float64(prev.Pods-prevPodsOf(res.Steps, len(res.Steps)-1, realPods)) / max(prev.CreateSeconds, 1)
			est := time.Duration(float64(ghostPods-w.pods)/max(rate, 1)*float64(time.Second)) + lastStepTook
			if time.Since(begin)+est > set.budget {
				res.Stopped = fmt.Sprintf("before %d nodes / %d pods: the step would take about %s (creation at %.0f pods/s, measurements as long as the last step's), past the run's budget of %s (BENCH_SCALE_BUDGET)",
					size.Nodes, size.Pods, est.Round(time.Minute), rate, set.budget)
				logf("%s", res.Stopped)
				break
			}
		}
		stepStart := time.Now()
		step := scalebench.Step{Nodes: size.Nodes, Policies: ghostPolicies + realPolicies}
		logf("step %d: growing to %d nodes / %d pods", k+1, size.Nodes, size.Pods)
		cctx, cancel := context.WithTimeout(ctx, set.createTimeout)
		cpu0, pods0 := controlPlaneCPU(), w.pods
		err := w.growTo(cctx, ghosts, ghostPods, ghostPolicies, func(s string) { logf("%s", s) })
		cancel()
		step.CreateSeconds = time.Since(stepStart).Seconds()
		if cpu1 := controlPlaneCPU(); err == nil && w.pods > pods0 {
			api, etcd := cpu1["kube-apiserver"]-cpu0["kube-apiserver"], cpu1["etcd"]-cpu0["etcd"]
			step.Notes = append(step.Notes, fmt.Sprintf("creation: %d pods (2 API writes each: create, status) at %.0f/s; kube-apiserver %.0f s of CPU, etcd %.0f s, i.e. %.1f ms of API server CPU per pod (load average %s)",
				w.pods-pods0, float64(w.pods-pods0)/step.CreateSeconds, api, etcd, api*1000/float64(w.pods-pods0), loadAvg()))
		}
		if err != nil {
			res.Stopped = fmt.Sprintf("at %d nodes / %d pods, after %s of creation: the API server did not hold: %v (%s; load average %s)",
				size.Nodes, size.Pods, time.Since(stepStart).Round(time.Second), err, controlPlaneRSS(), loadAvg())
			logf("%s", res.Stopped)
			break
		}
		step.Pods = w.pods + realPods
		podsAtMem := step.Pods // the pod-add samples come after the memory figures
		measureStep(t, &step, w, set, node, nsName, pp, logf)
		if step.RSSMiB != nil && podsAtMem > prevPods {
			step.MarginKiBPerPod = f64((*step.RSSMiB - prevRSS) * 1024 / float64(podsAtMem-prevPods))
			prevRSS = *step.RSSMiB
		}
		prevPods = podsAtMem
		step.Notes = append(step.Notes, "control plane after the step: "+controlPlaneRSS())
		res.Steps = append(res.Steps, step)
		lastStepTook = time.Since(stepStart) - time.Duration(step.CreateSeconds*float64(time.Second))
		res.Finished = time.Now().UTC()
		writeResult(t, set.out, res)
		fmt.Printf("\nBENCH scale after step %d (%s):\n%s\n", k+1, time.Since(begin).Round(time.Second), Table(res.Steps))
	}
	res.Finished = time.Now().UTC()
	writeResult(t, set.out, res)
	fmt.Printf("\nBENCH scale: %d steps in %s; result in %s\n%s\n", len(res.Steps), time.Since(begin).Round(time.Second),
		filepath.Join(set.out, "result.json"), Table(res.Steps))
	for _, s := range res.Steps {
		for _, n := range s.Notes {
			fmt.Printf("BENCH note %d nodes / %d pods: %s\n", s.Nodes, s.Pods, n)
		}
	}
	if res.Stopped != "" {
		fmt.Printf("BENCH stopped: %s\n", res.Stopped)
	}
	if len(res.Steps) == 0 {
		t.Fatal("no step measured")
	}
}

// prevPodsOf is the pod count before step i.
func prevPodsOf(steps []scalebench.Step, i, realPods int) int {
	if i == 0 {
		return realPods
	}
	return steps[i-1].Pods
}

func writeResult(t *testing.T, dir string, res scalebench.Result) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "table.md"), []byte(Table(res.Steps)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// countAddressedPods counts the pods with an address of their own (not
// host network) in the API.
func countAddressedPods(t *testing.T) int {
	t.Helper()
	list, err := l.CS.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range list.Items {
		if !p.Spec.HostNetwork && p.Status.PodIP != "" {
			n++
		}
	}
	return n
}

func selector(k, v string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
}

// setupPolicyProbe creates the real server (on the measured node) and
// client pods, the server's default deny, its big peer set (every ghost
// pod with role=a) and the toggle that admits the client.
func setupPolicyProbe(t *testing.T, serverNode, clientNode string) (*policyProbe, error) {
	t.Helper()
	realNS := l.Namespace(t, "scale-real", map[string]string{"scale": "real"})
	refs := l.CreatePods(t, realNS, []framework.PodSpec{{Name: "server", Node: serverNode, Labels: map[string]string{"role": "server"}},
		{Name: "client", Node: clientNode, Labels: map[string]string{"role": "client"}}}, 3*time.Minute)
	p := &policyProbe{realNS: realNS}
	for i, ref := range refs {
		_, name, _ := strings.Cut(ref, "/")
		pod, err := l.CS.CoreV1().Pods(realNS).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		path, err := probe.PodNetns(pod)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			p.server, p.serverIP = path, pod.Status.PodIP
		} else {
			p.client = path
		}
	}
	stop, err := sink(p.server)
	if err != nil {
		return nil, err
	}
	p.stopSink = stop
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	p.allow = networkingv1.NetworkPolicySpec{PodSelector: *selector("role", "server"), PolicyTypes: ingress,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: selector("role", "client")}}}}}
	for name, spec := range map[string]networkingv1.NetworkPolicySpec{
		"server-deny": {PodSelector: *selector("role", "server"), PolicyTypes: ingress},
		"server-big": {PodSelector: *selector("role", "server"), PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: selector(ghostLabel, "ghost"), PodSelector: selector("role", "a")}}}}},
		"toggle": p.allow,
	} {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
		if _, err := l.CS.NetworkingV1().NetworkPolicies(realNS).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	return p, p.flip(true, 60*time.Second)
}

// settle waits until the measured node holds a route to every peer and
// its policy table every pod address, then until the agent is quiet.
func settle(t *testing.T, step *scalebench.Step, node, nsName string, peers, pods int, logf func(string, ...any)) {
	t.Helper()
	start := time.Now()
	if at := <-mustWatch(nsName, peers); at.IsZero() {
		n, _ := routeCount(nsName)
		step.Notes = append(step.Notes, fmt.Sprintf("the node held %d Trellis routes after 5 minutes, want %d", n, peers))
	}
	logf("routes to the %d peers in place after %s", peers, time.Since(start).Round(time.Millisecond))
	n, err := waitSetSize(nsName, "pod-addrs", pods, 5*time.Minute)
	if err != nil {
		step.Notes = append(step.Notes, err.Error())
	}
	logf("policy set pod-addrs holds %d addresses after %s", n, time.Since(start).Round(time.Millisecond))
	pid := agentPID(node)
	for i := 0; i < 60; i++ {
		t0, _, err0 := procStat(pid)
		time.Sleep(2 * time.Second)
		t1, _, err1 := procStat(pid)
		if err0 == nil && err1 == nil && t1-t0 <= 4 { // ≤ 2 % of a core over 2 s
			break
		}
	}
	logf("agent quiet after %s", time.Since(start).Round(time.Second))
}

func mustWatch(nsName string, n int) <-chan time.Time {
	ch, err := watchRoutes(nsName, n, 5*time.Minute)
	if err != nil {
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}
	return ch
}

// waitSetSize waits until a set of the node's policy table holds at least
// n elements and returns its size.
func waitSetSize(nsName, set string, n int, within time.Duration) (int, error) {
	start := time.Now()
	got := 0
	for {
		out, err := exec.Command("ip", "netns", "exec", nsName, "nft", "list", "set", "inet", "trellis-policy", set).Output()
		if err == nil {
			s := string(out)
			if i := strings.Index(s, "elements = {"); i >= 0 {
				got = strings.Count(s[i:], ",") + 1
			} else {
				got = 0
			}
			if got >= n {
				return got, nil
			}
		}
		if time.Since(start) > within {
			return got, fmt.Errorf("set %s held %d elements after %s, want %d", set, got, within, n)
		}
		time.Sleep(2 * time.Second)
	}
}

// measureStep measures every figure of step on the agent of node.
func measureStep(t *testing.T, step *scalebench.Step, w *world, set settings, node, nsName string, p *policyProbe, logf func(string, ...any)) {
	t.Helper()
	ctx := context.Background()
	note := func(format string, a ...any) {
		s := fmt.Sprintf(format, a...)
		step.Notes = append(step.Notes, s)
		logf("%s", s)
	}
	settle(t, step, node, nsName, step.Nodes-1, w.pods, logf)

	// Memory.
	pid := agentPID(node)
	if rss, err := rssMiB(pid); err == nil {
		step.RSSMiB = f64(rss)
	} else {
		note("RSS: %v", err)
	}
	if m, err := scrape(netnsPath(nsName)); err != nil {
		note("heap: %v", err)
	} else if v, ok := m.get(mHeapInuse); ok {
		step.HeapInuseMiB = f64(v / (1 << 20))
	} else {
		note("heap: the agent exports no %s", mHeapInuse)
	}
	logf("memory: RSS %s MiB, heap in use %s MiB (load average %s)", show(step.RSSMiB), show(step.HeapInuseMiB), loadAvg())

	// Idle CPU.
	t0, _, err0 := procStat(pid)
	time.Sleep(set.idle)
	t1, _, err1 := procStat(pid)
	if err0 == nil && err1 == nil {
		step.IdleCPUPercent = f64(float64(t1-t0) / clockTicks / set.idle.Seconds() * 100)
		step.IdleSeconds = set.idle.Seconds()
	} else {
		note("idle CPU: %v %v", err0, err1)
	}
	logf("idle CPU over %s: %s %% of a core (load average %s)", set.idle, show(step.IdleCPUPercent), loadAvg())

	// Node added → on the node.
	if ds, err := nodeAdds(ctx, w, nsName, set.samples); err != nil {
		note("node adds: %v", err)
	} else {
		step.NodeAddP50Ms, step.NodeAddP99Ms, step.NodeAddSamples = f64(Percentile(ds, 50)), f64(Percentile(ds, 99)), len(ds)
	}
	logf("node add → route on %s: p50 %s ms p99 %s ms over %d (load average %s)", node, show(step.NodeAddP50Ms), show(step.NodeAddP99Ms), step.NodeAddSamples, loadAvg())

	// Pod add → in the policy table, and the transaction size.
	if ds, ops, lines, err := podAdds(ctx, w, nsName, set.samples); err != nil {
		note("pod adds: %v", err)
	} else {
		step.PodAddP50Ms, step.PodAddP99Ms, step.PodAddSamples = f64(Percentile(ds, 50)), f64(Percentile(ds, 99)), len(ds)
		step.TxOpsPerChange = ops
		if ops == nil {
			note("nftables operations per pod add: the agent exports no %s (histogram of operations per committed policy transaction); `nft monitor` printed %.1f lines (objects touched) per transaction that added a pod", mTxOps, lines)
		} else {
			note("nftables operations per pod add: %.1f (%s); `nft monitor` printed %.1f lines per such transaction", *ops, mTxOps, lines)
		}
	}
	step.Pods = step.Pods + step.PodAddSamples
	logf("pod add → in the table: p50 %s ms p99 %s ms over %d; %s ops per transaction (load average %s)",
		show(step.PodAddP50Ms), show(step.PodAddP99Ms), step.PodAddSamples, show(step.TxOpsPerChange), loadAvg())

	// Policy change → enforced.
	if deny, allow, err := p.flips(ctx, set.flips); err != nil {
		note("policy flips: %v", err)
	} else {
		all := append(append([]time.Duration{}, deny...), allow...)
		step.PolicyChangeP50Ms, step.PolicyChangeP99Ms, step.PolicyChangeSamples = f64(Percentile(all, 50)), f64(Percentile(all, 99)), len(all)
		note("policy change → enforced: deny p50 %.0f p99 %.0f ms, allow p50 %.0f p99 %.0f ms over %d flips each (load average %s)",
			Percentile(deny, 50), Percentile(deny, 99), Percentile(allow, 50), Percentile(allow, 99), len(deny), loadAvg())
	}

	// Agent restart: the list and the full resync.
	if r, err := restartAgent(t, node, nsName, false); err != nil {
		note("restart: %v", err)
	} else {
		step.ListSeconds, step.ResyncSeconds = r.listSeconds, r.resync
		note("restart: API list %s s, full resync %s s, routing's first sync %s s after the list (from %s; load average %s)",
			show(r.listSeconds), show(r.resync), show(r.routingFirst), r.source, loadAvg())
	}
	// Cold start: no Trellis route, no VXLAN device.
	if r, err := restartAgent(t, node, nsName, true); err != nil {
		note("cold start: %v", err)
	} else if r.routingTook != nil {
		step.RoutingColdSeconds = r.routingTook
		note("cold start (every Trellis route and the VXLAN device removed while the agent was down): routing's first sync, programming every peer, took %.2f s (%s); every route back %.2f s after the process started, %s s after the informers synced (routing waits for the Nodes only, not the pods); full resync %s s (load average %s)",
			*r.routingTook, mInitialSyncTook, r.routesAt.Sub(r.started).Seconds(), showSince(r.routesAt, r.synced), show(r.resync), loadAvg())
	} else {
		note("cold start: every route back %.2f s after the process started, %s s after the informers synced; the agent exports no %s (%s)",
			r.routesAt.Sub(r.started).Seconds(), showSince(r.routesAt, r.synced), mInitialSyncTook, r.source)
	}
	note("load average at the end of the step: %s", loadAvg())
}

// showSince is a − b in seconds, or "?" when b is unknown.
func showSince(a, b time.Time) string {
	if b.IsZero() {
		return "?"
	}
	return fmt.Sprintf("%.2f", a.Sub(b).Seconds())
}

func show(v *float64) string {
	if v == nil {
		return "—"
	}
	if *v >= 100 {
		return fmt.Sprintf("%.0f", *v)
	}
	return fmt.Sprintf("%.2f", *v)
}
