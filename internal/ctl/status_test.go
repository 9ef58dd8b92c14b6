package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// fakeFetcher answers per node, after delay, and records the most
// requests it saw at once.
type fakeFetcher struct {
	status map[string]*agentapi.Status
	errs   map[string]error
	delay  map[string]time.Duration

	inFlight, maxInFlight atomic.Int32
	mu                    sync.Mutex
	asked                 []string
}

func (f *fakeFetcher) FetchStatus(ctx context.Context, pod *corev1.Pod) (*agentapi.Status, error) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxInFlight.Load()
		if n <= m || f.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	f.mu.Lock()
	f.asked = append(f.asked, pod.Spec.NodeName)
	f.mu.Unlock()
	select {
	case <-time.After(f.delay[pod.Spec.NodeName] + 20*time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := f.errs[pod.Spec.NodeName]; err != nil {
		return nil, err
	}
	return f.status[pod.Spec.NodeName], nil
}

var statusNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func healthyStatus(node string) *agentapi.Status {
	ok := statusNow.Add(-5 * time.Second)
	return &agentapi.Status{Version: "v1", Node: node, Time: statusNow, RoutingMode: "auto", MTU: 1450, Ready: true,
		MaxSyncInterval: agentapi.Duration{Duration: time.Minute},
		Controllers:     []agentapi.Controller{{Name: "routing", LastSuccess: &ok, Syncs: 3}, {Name: "policy", LastSuccess: &ok, Syncs: 9}},
		Routing: agentapi.Routing{Routes: 1, Peers: []agentapi.Peer{
			{Node: "peer", Mode: "native", State: agentapi.PeerProgrammed, Routes: 1}}},
		Policy:    agentapi.Policy{Enforced: true, Policies: 4, IsolatedIngress: 2, IsolatedEgress: 1},
		FastPath:  agentapi.FastPath{Enabled: true, Loaded: true, State: agentapi.FastPathActive},
		Dataplane: agentapi.Dataplane{Ready: true, Marker: true}}
}

func agentPod(node string, phase corev1.PodPhase, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "trellis-agent-" + node, Namespace: "kube-system",
			Labels: map[string]string{"app.kubernetes.io/name": "trellis-agent"}},
		Spec: corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: agentContainer, RestartCount: 2}}},
	}
}

func clusterNode(name string, networkUnavailable corev1.ConditionStatus) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if networkUnavailable != "" {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeNetworkUnavailable, Status: networkUnavailable, Reason: "TrellisNotReady"}}
	}
	return n
}

func statusOptions(objs ...runtime.Object) (*Options, *bytes.Buffer) {
	var out bytes.Buffer
	o := &Options{Namespace: "kube-system", Out: &out}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: AgentDaemonSet, Namespace: "kube-system"}}
	o.SetClients(&rest.Config{}, fake.NewClientset(append(objs, ds)...))
	return o, &out
}

// TestStatusJudgesEveryNode builds one node per way of being unhealthy
// beside a healthy one and checks the verdict, the reason, the table and
// the exit code.
func TestStatusJudgesEveryNode(t *testing.T) {
	failing := healthyStatus("failing")
	failing.Ready, failing.NotReady = false, []string{"policy: policy controller failing: nft: EPERM"}
	failing.Controllers[1].LastError = "nft: EPERM"
	stale := healthyStatus("stale")
	old := statusNow.Add(-10 * time.Minute)
	stale.Controllers[0].LastSuccess = &old
	warned := healthyStatus("warned")
	warned.FastPath = agentapi.FastPath{Enabled: true, State: agentapi.FastPathNotLoad, Reason: "no BTF"}
	warned.Routing.Peers = append(warned.Routing.Peers, agentapi.Peer{Node: "far", State: agentapi.PeerNotProgrammed, Reason: "PeerNotOnSameSubnet"})
	problem := healthyStatus("problem")
	problem.Problems = map[string]string{"ForeignCNIConfig": "10-other.conflist sorts first"}

	fetch := &fakeFetcher{
		status: map[string]*agentapi.Status{"good": healthyStatus("good"), "failing": failing, "stale": stale,
			"warned": warned, "problem": problem, "netunavail": healthyStatus("netunavail"), "slow": healthyStatus("slow")},
		errs:  map[string]error{"unreachable": errors.New("exec: container not found")},
		delay: map[string]time.Duration{"slow": time.Hour},
	}
	o, out := statusOptions(
		clusterNode("good", corev1.ConditionFalse), agentPod("good", corev1.PodRunning, true),
		clusterNode("nopod", ""),
		clusterNode("pending", ""), agentPod("pending", corev1.PodPending, false),
		clusterNode("notready", ""), agentPod("notready", corev1.PodRunning, false),
		clusterNode("unreachable", ""), agentPod("unreachable", corev1.PodRunning, true),
		clusterNode("failing", ""), agentPod("failing", corev1.PodRunning, true),
		clusterNode("stale", ""), agentPod("stale", corev1.PodRunning, true),
		clusterNode("problem", ""), agentPod("problem", corev1.PodRunning, true),
		clusterNode("netunavail", corev1.ConditionTrue), agentPod("netunavail", corev1.PodRunning, true),
		clusterNode("slow", ""), agentPod("slow", corev1.PodRunning, true),
		clusterNode("warned", ""), agentPod("warned", corev1.PodRunning, true),
	)
	start := time.Now()
	err := o.runStatus(context.Background(), fetch, statusFlags{agentTimeout: 200 * time.Millisecond, parallel: 3})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("status took %v with a 200ms per-node timeout", took)
	}
	if got := fetch.maxInFlight.Load(); got > 3 || got < 2 {
		t.Errorf("at most %d agents asked at once, want 2..3 (--parallel 3)", got)
	}
	if ExitCode(err) != ExitFailed {
		t.Fatalf("runStatus = %v (exit %d), want exit 1", err, ExitCode(err))
	}
	want := map[string]string{
		"nopod":       "no agent pod",
		"pending":     "agent pod trellis-agent-pending is Pending",
		"notready":    "agent pod trellis-agent-notready is not ready",
		"unreachable": "agent unreachable: exec: container not found",
		"failing":     "controller policy failing: nft: EPERM",
		"stale":       "controller routing stale: last successful sync 10m0s ago",
		"problem":     "problem ForeignCNIConfig: 10-other.conflist sorts first",
		"netunavail":  "NetworkUnavailable is True",
		"slow":        "agent unreachable: no answer within 200ms",
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "9 of 11 nodes unhealthy") {
		t.Errorf("error %q, want it to count 9 of 11", msg)
	}
	for node, reason := range want {
		if !strings.Contains(msg, node+" (") || !strings.Contains(msg, reason) {
			t.Errorf("error %q does not name %s with %q", msg, node, reason)
		}
		if !strings.Contains(out.String(), node+" unhealthy: ") {
			t.Errorf("output does not name %s unhealthy", node)
		}
	}
	for _, healthy := range []string{"good (", "warned ("} {
		if strings.Contains(msg, healthy) {
			t.Errorf("error %q names a healthy node %s", msg, healthy)
		}
	}
	for _, line := range []string{"warned warning: fast path unavailable: no BTF", "warned warning: peer far not programmed: PeerNotOnSameSubnet",
		"11 nodes: 2 healthy, 9 unhealthy; 4 policies;"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
	var goodRow []string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "good ") {
			goodRow = strings.Fields(l)
		}
	}
	wantRow := []string{"good", "Running", "yes", "v1", "auto(native)", "1450", "1/1", "1", "4", "2/1", "active", "5s", "0"}
	if strings.Join(goodRow, " ") != strings.Join(wantRow, " ") {
		t.Errorf("row of good = %q, want %q", goodRow, wantRow)
	}
}

func TestStatusHealthyJSONAndWide(t *testing.T) {
	fetch := &fakeFetcher{status: map[string]*agentapi.Status{"a": healthyStatus("a"), "b": healthyStatus("b")}}
	o, out := statusOptions(clusterNode("a", ""), agentPod("a", corev1.PodRunning, true),
		clusterNode("b", ""), agentPod("b", corev1.PodRunning, true))
	if err := o.runStatus(context.Background(), fetch, statusFlags{output: OutputJSON, agentTimeout: time.Second, parallel: 8}); err != nil {
		t.Fatalf("all healthy: %v", err)
	}
	var rep StatusReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out.String())
	}
	if len(rep.Nodes) != 2 || !rep.Nodes[0].Healthy || rep.Nodes[1].Agent == nil || rep.Nodes[1].Agent.MTU != 1450 ||
		rep.Summary != (StatusSummary{Nodes: 2, Healthy: 2, Policies: 4, IsolatedIngress: 4, IsolatedEgress: 2, Routes: 2, FastPathActive: 2}) {
		t.Errorf("report = %+v", rep)
	}
	out.Reset()
	if err := o.runStatus(context.Background(), fetch, statusFlags{output: OutputWide, agentTimeout: time.Second, parallel: 8}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "policy=5s,routing=5s") || !strings.Contains(out.String(), "RESTARTS") {
		t.Errorf("wide output lacks the per-controller sync ages:\n%s", out.String())
	}
}

func TestStatusWithoutTrellis(t *testing.T) {
	var out, errOut bytes.Buffer
	o := &Options{Namespace: "kube-system", Out: &out, ErrOut: &errOut}
	o.SetClients(&rest.Config{}, fake.NewClientset(clusterNode("a", "")))
	err := o.runStatus(context.Background(), &fakeFetcher{}, statusFlags{agentTimeout: time.Second, parallel: 1})
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("without Trellis: %v (exit %d), want exit 2", err, ExitCode(err))
	}
	if err := o.runStatus(context.Background(), &fakeFetcher{}, statusFlags{output: "xml", agentTimeout: time.Second, parallel: 1}); ExitCode(err) != ExitUsage {
		t.Errorf("-o xml: exit %d, want 2", ExitCode(err))
	}
	out.Reset()
	errOut.Reset()
	if code := Run(context.Background(), "v", []string{"status", "--parallel", "0"}, &out, &errOut); code != ExitUsage ||
		!strings.Contains(errOut.String(), "--parallel") {
		t.Errorf("status --parallel 0: exit %d, stderr %q; want 2 naming the flag", code, errOut.String())
	}
}

func TestStatusShowsEncryption(t *testing.T) {
	hs := statusNow.Add(-30 * time.Second)
	enc := func(node string, strict bool, peers ...agentapi.EncryptionPeer) *agentapi.Status {
		st := healthyStatus(node)
		st.Routing.Peers[0].Mode = "wireguard"
		st.Encryption = agentapi.Encryption{Mode: "wireguard", Strict: strict, Device: "trellis.wg", Engine: "userspace",
			KeyID: "k-" + node, ListenPort: 51871, Offloads: []string{"tun-vnet-hdr"}, Peers: peers}
		for _, p := range peers {
			if p.LastHandshake != nil {
				st.Encryption.PeersWithHandshake++
			}
		}
		return st
	}
	a := enc("a", true, agentapi.EncryptionPeer{Node: "b", KeyID: "k-b", LastHandshake: &hs})
	b := enc("b", false, agentapi.EncryptionPeer{Node: "a", KeyID: "k-a"})
	c := enc("c", true)
	c.Routing.Peers[0].Mode = "native" // a peer without a key
	d := enc("d", true)
	d.Encryption.Error = "no such device"
	fetch := &fakeFetcher{status: map[string]*agentapi.Status{"a": a, "b": b, "c": c, "d": d}}
	var objs []runtime.Object
	for _, n := range []string{"a", "b", "c", "d"} {
		objs = append(objs, clusterNode(n, ""), agentPod(n, corev1.PodRunning, true))
	}
	o, out := statusOptions(objs...)
	if err := o.runStatus(context.Background(), fetch, statusFlags{agentTimeout: time.Second, parallel: 8}); err != nil {
		t.Fatalf("encryption warnings must not make a node unhealthy: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"ENCRYPTION",
		"userspace k-a 1/1",
		"userspace k-b 0/1, not strict",
		"b warning: encryption: no handshake with node a (key k-a) yet",
		"c warning: encryption: peer peer is reached by native, not WireGuard (no public key published): strict mode drops its traffic",
		"d warning: encryption: WireGuard device trellis.wg unreadable: no such device",
		"; encryption on 4/4, 1 peer(s) without a handshake",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status output lacks %q:\n%s", want, got)
		}
	}
	lines := strings.Split(got, "\n")
	if col := strings.Index(lines[0], "ENCRYPTION"); col < 0 || !strings.HasPrefix(lines[4][col:], "error") {
		t.Errorf("node d's ENCRYPTION cell is not \"error\":\n%s", got)
	}

	// Without encryption anywhere, the table keeps its columns.
	out.Reset()
	plain := &fakeFetcher{status: map[string]*agentapi.Status{"a": healthyStatus("a"), "b": healthyStatus("b"),
		"c": healthyStatus("c"), "d": healthyStatus("d")}}
	if err := o.runStatus(context.Background(), plain, statusFlags{agentTimeout: time.Second, parallel: 8}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "ENCRYPTION") || strings.Contains(out.String(), "encryption on") {
		t.Errorf("a cluster without encryption shows it:\n%s", out.String())
	}
}

// A cluster running BGP gets a BGP column: established/configured
// sessions, "off" on a node without a speaker; none without BGP.
func TestStatusShowsBGP(t *testing.T) {
	a, b := healthyStatus("a"), healthyStatus("b")
	a.BGP = &agentapi.BGP{Enabled: true, Established: 1, Configured: 2}
	b.BGP = &agentapi.BGP{Reason: "no BGPConfiguration named default"}
	fetch := &fakeFetcher{status: map[string]*agentapi.Status{"a": a, "b": b}}
	var objs []runtime.Object
	for _, n := range []string{"a", "b"} {
		objs = append(objs, clusterNode(n, ""), agentPod(n, corev1.PodRunning, true))
	}
	o, out := statusOptions(objs...)
	if err := o.runStatus(context.Background(), fetch, statusFlags{agentTimeout: time.Second, parallel: 8}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	lines := strings.Split(out.String(), "\n")
	col := strings.Index(lines[0], " BGP ")
	if col < 0 || !strings.HasPrefix(lines[1][col+1:], "1/2") || !strings.HasPrefix(lines[2][col+1:], "off") ||
		strings.Index(lines[0], "LAST SYNC") < col {
		t.Errorf("BGP column (before LAST SYNC) should read 1/2 and off:\n%s", out.String())
	}
	b.BGP, a.BGP = nil, nil
	out.Reset()
	if err := o.runStatus(context.Background(), fetch, statusFlags{agentTimeout: time.Second, parallel: 8}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "BGP") {
		t.Errorf("a cluster without BGP shows it:\n%s", out.String())
	}
}
