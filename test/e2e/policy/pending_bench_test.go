//go:build e2e

package policy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/test/e2e/framework"
)

// Scale of TestBenchPendingWindow: pendingBatches batches of one pod per node.
const pendingBatches = 8

// pendingSample is one pod's measurement.
type pendingSample struct {
	Pod  string `json:"pod"`
	Node string `json:"node"`
	IP   string `json:"ip"`
	// Iface is the pod's host interface (from its /32 host route).
	Iface string `json:"iface,omitempty"`
	// Window is CNI ADD returning (the plugin's log line) → the transaction
	// that puts the pod's interface into its node's policy table (nft
	// monitor; see nftMonitor).
	Window time.Duration `json:"window"`
	// Status is CNI ADD returning → the pod's address first seen in its
	// status through a watch (what the agent waited for before netlink).
	Status time.Duration `json:"status"`
}

// TestBenchPendingWindow (make bench-pending, not part of make test): how
// long a new pod in a namespace with a default-deny policy stays pending
// (dropped by the pending rules) after CNI ADD returns, i.e. until the agent
// programs its interface into the policy table. Pods are created one per
// node per batch; each node's table is followed with `nft monitor` in its
// network namespace (nftMonitor), CNI ADD's return time is the plugin's log
// line, a pod's interface is that of its host route. With
// BENCH_PENDING_OUT=file the samples are written as JSON; with
// BENCH_PENDING_BASELINE=file (an earlier run's output, e.g. of the old
// binaries) the ratios this run ÷ baseline are printed.
func TestBenchPendingWindow(t *testing.T) {
	requireAgent(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes := l.Nodes()
	nsName := l.Namespace(t, "pending", nil)
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-all", Namespace: nsName},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
	if _, err := l.CS.NetworkingV1().NetworkPolicies(nsName).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the policy is in force before the first pod exists

	mon := &nftMonitor{seen: map[string][]time.Time{}}
	for _, n := range nodes {
		mon.start(ctx, t, n)
	}
	status := watchStatusIPs(ctx, t, nsName)
	ifaces := map[string]string{} // pod → host interface

	var pods []string
	for b := 0; b < pendingBatches; b++ {
		var batch []string
		for i, n := range nodes {
			name := fmt.Sprintf("b%d-n%d", b, i)
			pod := framework.AgnhostPod(nsName, framework.PodSpec{Name: name, Node: n})
			if _, err := l.CS.CoreV1().Pods(nsName).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			batch = append(batch, name)
		}
		pods = append(pods, batch...)
		waitPending(t, nsName, batch, mon, status, ifaces)
	}
	samples := pendingSamples(t, nsName, pods, mon, status, ifaces)
	reportPending(t, samples)
}

// nftMonitor records when each pod interface is programmed on a node: the
// time of the first element naming it in pod-ifaces or ingress-pods. The
// agent adds a pod to pod-ifaces and (its namespace being default-deny) to
// ingress-pods in one nft transaction, so both carry the same moment. Both
// are watched because nft 1.0.6's monitor drops the events of pod-ifaces
// ("W: Received event for an unknown set.") while printing those of the
// verdict maps; pendingSamples checks the pod-ifaces content at the end.
type nftMonitor struct {
	mu   sync.Mutex
	seen map[string][]time.Time // "node/iface" → times added
	last []string               // the last lines read, for a failure message
	// dead names a node whose monitor stopped before the test ended: from
	// then on its events are lost, and the bench fails rather than wait.
	dead []string
}

var ifaceRE = regexp.MustCompile(`"(trl[^"]*)"`)

func (m *nftMonitor) start(ctx context.Context, t *testing.T, node string) {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+filepath.Join("/var/run/netns", h.Netns), "nft", "monitor", "new", "elements")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("nft monitor on %s: %v", node, err)
	}
	t.Cleanup(func() { cancelWait(cmd) })
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			now := time.Now()
			line := sc.Text()
			m.mu.Lock()
			m.last = append(m.last, node+": "+line)
			if len(m.last) > 20 {
				m.last = m.last[1:]
			}
			if !strings.Contains(line, "trellis-policy pod-ifaces") && !strings.Contains(line, "trellis-policy ingress-pods") {
				m.mu.Unlock()
				continue
			}
			for _, sub := range ifaceRE.FindAllStringSubmatch(line, -1) {
				m.seen[node+"/"+sub[1]] = append(m.seen[node+"/"+sub[1]], now)
			}
			m.mu.Unlock()
		}
		if ctx.Err() == nil {
			m.mu.Lock()
			m.dead = append(m.dead, fmt.Sprintf("%s (read: %v)", node, sc.Err()))
			m.mu.Unlock()
		}
	}()
	time.Sleep(200 * time.Millisecond) // subscribed before the first pod
}

func cancelWait(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
	_ = cmd.Wait()
}

// first returns the first time iface was programmed on node at or after t0.
func (m *nftMonitor) first(node, iface string, t0 time.Time) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ts := range m.seen[node+"/"+iface] {
		if !ts.Before(t0) {
			return ts, true
		}
	}
	return time.Time{}, false
}

// statusIPs records when each pod's address first shows in its status.
type statusIPs struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (s *statusIPs) get(pod string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts, ok := s.seen[pod]
	return ts, ok
}

// names returns the pods whose address has been seen in their status.
func (s *statusIPs) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.seen))
	for n := range s.seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// podIfacesNow lists pod-ifaces on the nodes of batch's pods, so a timeout
// tells "the agent never programmed it" from "the monitor missed it".
func podIfacesNow(batch []string, adds map[string]cniAdd) string {
	var b strings.Builder
	done := map[string]bool{}
	for _, p := range batch {
		a, ok := adds[p]
		if !ok || done[a.node] {
			continue
		}
		done[a.node] = true
		h, err := l.State.Topology.Node(a.node)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", a.node, err)
			continue
		}
		out, err := exec.Command("ip", "netns", "exec", h.Netns, "nft", "list", "set", "inet", "trellis-policy", "pod-ifaces").CombinedOutput()
		fmt.Fprintf(&b, "%s pod-ifaces now (err %v):\n%s\n", a.node, err, out)
	}
	return b.String()
}

func watchStatusIPs(ctx context.Context, t *testing.T, nsName string) *statusIPs {
	t.Helper()
	s := &statusIPs{seen: map[string]time.Time{}}
	w, err := l.CS.CoreV1().Pods(nsName).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			now := time.Now()
			if pod, ok := ev.Object.(*corev1.Pod); ok && pod.Status.PodIP != "" {
				s.mu.Lock()
				if _, dup := s.seen[pod.Name]; !dup {
					s.seen[pod.Name] = now
				}
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// hostIface returns the interface of ip's /32 host route on node (the
// plugin installs it before ADD returns), "" when there is none.
func hostIface(node, ip string) string {
	h, err := l.State.Topology.Node(node)
	if err != nil {
		return ""
	}
	out, err := exec.Command("ip", "netns", "exec", h.Netns, "ip", "-4", "route", "show", "exact", ip+"/32").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	return ""
}

// cniAdd is one successful ADD from a node's plugin log.
type cniAdd struct {
	node string
	ip   string
	end  time.Time // the log line's time: the call returned
	dur  time.Duration
}

// cniAdds reads every node's plugin log for the ADDs of pods in nsName.
func cniAdds(t *testing.T, nsName string) map[string]cniAdd {
	t.Helper()
	out := map[string]cniAdd{}
	for _, n := range l.Nodes() {
		f, err := os.Open(filepath.Join(l.Paths.Node(n), "fs", "var-log-trellis", "cni.log"))
		if err != nil {
			continue // no pod on this node yet
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			var rec struct {
				Time       time.Time `json:"time"`
				Command    string    `json:"command"`
				Msg        string    `json:"msg"`
				Pod        string    `json:"pod"`
				DurationMs float64   `json:"durationMs"`
				Addresses  []string  `json:"addresses"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Command != "ADD" || rec.Msg != "ok" || len(rec.Addresses) == 0 {
				continue
			}
			ns, name, _ := strings.Cut(rec.Pod, "/")
			if ns != nsName {
				continue
			}
			out[name] = cniAdd{node: n, ip: rec.Addresses[0], end: rec.Time,
				dur: time.Duration(rec.DurationMs * float64(time.Millisecond))}
		}
		_ = f.Close()
	}
	return out
}

// waitPending waits until every pod of the batch has been added by the
// plugin, programmed by its agent and shown its address in its status.
func waitPending(t *testing.T, nsName string, batch []string, mon *nftMonitor, status *statusIPs, ifaces map[string]string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		adds := cniAdds(t, nsName)
		var missing []string
		for _, p := range batch {
			a, ok := adds[p]
			if !ok {
				missing = append(missing, p+" (no CNI ADD)")
				continue
			}
			if ifaces[p] == "" {
				ifaces[p] = hostIface(a.node, a.ip)
			}
			if ifaces[p] == "" {
				missing = append(missing, p+" (no host route)")
				continue
			}
			if _, ok := mon.first(a.node, ifaces[p], a.end.Add(-a.dur-50*time.Millisecond)); !ok {
				missing = append(missing, p+" (not programmed)")
				continue
			}
			if _, ok := status.get(p); !ok {
				missing = append(missing, p+" (no status IP)")
			}
		}
		if len(missing) == 0 {
			return
		}
		mon.mu.Lock()
		dead := append([]string(nil), mon.dead...)
		mon.mu.Unlock()
		if len(dead) > 0 {
			t.Fatalf("nft monitor stopped on %v; still waiting for %v", dead, missing)
		}
		if time.Now().After(deadline) {
			mon.mu.Lock()
			last := strings.Join(mon.last, "\n")
			mon.mu.Unlock()
			t.Fatalf("after 90s: %v; CNI ADDs %+v; status IPs seen for %v; last nft monitor lines:\n%s\n%s",
				missing, adds, status.names(), last, podIfacesNow(batch, adds))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pendingSamples(t *testing.T, nsName string, pods []string, mon *nftMonitor, status *statusIPs, ifaces map[string]string) []pendingSample {
	t.Helper()
	adds := cniAdds(t, nsName)
	tables := map[string]string{}
	var out []pendingSample
	for _, p := range pods {
		a := adds[p]
		// The ADD began at end-dur: an entry for this interface before
		// that belongs to an earlier pod that had it.
		prog, _ := mon.first(a.node, ifaces[p], a.end.Add(-a.dur-50*time.Millisecond))
		st, _ := status.get(p)
		out = append(out, pendingSample{Pod: p, Node: a.node, IP: a.ip, Iface: ifaces[p], Window: prog.Sub(a.end), Status: st.Sub(a.end)})
		// What was timed is this pod's programming: its interface and
		// address are in pod-ifaces now.
		if _, ok := tables[a.node]; !ok {
			tables[a.node] = podIfacesNow([]string{p}, adds)
		}
		if want := fmt.Sprintf("%q . %s", ifaces[p], a.ip); !strings.Contains(tables[a.node], want) {
			t.Fatalf("%s: %s not in pod-ifaces of %s:\n%s", p, want, a.node, tables[a.node])
		}
	}
	return out
}

type pendingStats struct{ P50, P99, Max, Min time.Duration }

func statsOf(ds []time.Duration) pendingStats {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return pendingStats{P50: pct(s, 50), P99: pct(s, 99), Max: s[len(s)-1].Round(time.Millisecond), Min: s[0].Round(time.Millisecond)}
}

func windows(samples []pendingSample) (win, st []time.Duration) {
	for _, s := range samples {
		win = append(win, s.Window)
		st = append(st, s.Status)
	}
	return win, st
}

func reportPending(t *testing.T, samples []pendingSample) {
	t.Helper()
	win, st := windows(samples)
	w, s := statsOf(win), statsOf(st)
	var b strings.Builder
	for _, x := range samples {
		fmt.Fprintf(&b, "  %-8s %-6s %-15s window %8s  status %8s\n", x.Pod, x.Node, x.IP,
			x.Window.Round(time.Millisecond), x.Status.Round(time.Millisecond))
	}
	t.Logf("per pod (from CNI ADD returning):\n%s", b.String())
	t.Logf("pending window over %d pods (CNI ADD returned → programmed in pod-ifaces): p50 %s  p99 %s  max %s  min %s",
		len(samples), w.P50, w.P99, w.Max, w.Min)
	t.Logf("for reference, CNI ADD returned → address in the pod's status (watch): p50 %s  p99 %s  max %s",
		s.P50, s.P99, s.Max)
	if path := os.Getenv("BENCH_PENDING_OUT"); path != "" {
		data, _ := json.MarshalIndent(samples, "", "  ")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Errorf("write %s: %v", path, err)
		}
	}
	if path := os.Getenv("BENCH_PENDING_BASELINE"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("baseline: %v", err)
		}
		var base []pendingSample
		if err := json.Unmarshal(data, &base); err != nil || len(base) == 0 {
			t.Fatalf("baseline %s: %v (%d samples)", path, err, len(base))
		}
		bw, _ := windows(base)
		bs := statsOf(bw)
		ratio := func(a, b time.Duration) string {
			if b <= 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2f", float64(a)/float64(b))
		}
		t.Logf("baseline (%d pods): p50 %s  p99 %s  max %s; this run ÷ baseline: p50 %s  p99 %s  max %s",
			len(base), bs.P50, bs.P99, bs.Max, ratio(w.P50, bs.P50), ratio(w.P99, bs.P99), ratio(w.Max, bs.Max))
	}
}
