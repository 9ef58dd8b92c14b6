package bgp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// ctlSpeaker records what it was asked and reports what the test sets.
type ctlSpeaker struct {
	mu      sync.Mutex
	applied []Desired
	peers   []PeerState
	learned []LearnedRoute
	changes chan struct{}
	stopped bool
	err     error // Apply's
}

func newCtlSpeaker() *ctlSpeaker { return &ctlSpeaker{changes: make(chan struct{}, 1)} }

func (s *ctlSpeaker) Apply(_ context.Context, d Desired) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = append(s.applied, d)
	return s.err
}

func (s *ctlSpeaker) Peers() []PeerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]PeerState(nil), s.peers...)
}

func (s *ctlSpeaker) Learned() []LearnedRoute {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]LearnedRoute(nil), s.learned...)
}

func (s *ctlSpeaker) Changes() <-chan struct{} { return s.changes }

func (s *ctlSpeaker) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
}

func (s *ctlSpeaker) set(peers []PeerState, learned []LearnedRoute) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peers, s.learned = peers, learned
}

func (s *ctlSpeaker) lastApplied() Desired {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied[len(s.applied)-1]
}

// ctlKernel holds routes of the BGP protocol; foreign prefixes are
// another owner's.
type ctlKernel struct {
	routes  map[netip.Prefix]KernelRoute
	foreign map[netip.Prefix]bool
	sweeps  []bool
}

func newCtlKernel(stale ...KernelRoute) *ctlKernel {
	k := &ctlKernel{routes: map[netip.Prefix]KernelRoute{}, foreign: map[netip.Prefix]bool{}}
	for _, r := range stale {
		k.routes[r.Prefix] = r
	}
	return k
}

func (k *ctlKernel) List() ([]KernelRoute, error) {
	var out []KernelRoute
	for _, r := range k.routes {
		out = append(out, r)
	}
	return out, nil
}

func (k *ctlKernel) Apply(want []KernelRoute, sweep bool) ([]KernelRoute, error) {
	k.sweeps = append(k.sweeps, sweep)
	keep := map[netip.Prefix]bool{}
	var foreign []KernelRoute
	for _, r := range want {
		if k.foreign[r.Prefix] {
			foreign = append(foreign, r)
			continue
		}
		k.routes[r.Prefix], keep[r.Prefix] = r, true
	}
	if sweep {
		for p := range k.routes {
			if !keep[p] {
				delete(k.routes, p)
			}
		}
	}
	return foreign, nil
}

func (k *ctlKernel) has(p string) bool {
	_, ok := k.routes[netip.MustParsePrefix(p)]
	return ok
}

type ctlStatus struct {
	mu      sync.Mutex
	written []*v1alpha1.BGPNodeStatus
}

func (f *ctlStatus) ApplyNodeStatus(_ context.Context, st *v1alpha1.BGPNodeStatus) (*v1alpha1.BGPNodeStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written = append(f.written, st.DeepCopy())
	return st, nil
}

func (f *ctlStatus) last(t *testing.T) *v1alpha1.BGPNodeStatus {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.written) == 0 {
		t.Fatal("no BGPNodeStatus written")
	}
	return f.written[len(f.written)-1]
}

var (
	ctlTorAddr = netip.MustParseAddr("10.0.1.1")
	ctlTorPeer = Neighbor{Address: ctlTorAddr, ASN: 65000, Source: "tor", Password: "s3cret-pw"}
)

// ctlEnv is a controller with fakes around it.
type ctlEnv struct {
	t       *testing.T
	ctl     *Controller
	speaker *ctlSpeaker
	kernel  *ctlKernel
	status  *ctlStatus
	events  *record.FakeRecorder
	logs    *bytes.Buffer
	now     time.Time
	served  bool
	objects cache.Store
	// compute is what Compute returns (the input it got is kept).
	desired  Desired
	problems []Problem
	input    Input
	stateDir string
}

func newCtlEnv(t *testing.T, stale ...KernelRoute) *ctlEnv {
	e := &ctlEnv{t: t, speaker: newCtlSpeaker(), kernel: newCtlKernel(stale...), status: &ctlStatus{},
		events: record.NewFakeRecorder(100), logs: &bytes.Buffer{}, now: time.Unix(1000, 0), served: true, stateDir: t.TempDir()}
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = nodes.Add(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec:   v1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24"}},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.1.11"}}}})
	e.objects = cache.NewStore(cache.MetaNamespaceKeyFunc)
	_ = e.objects.Add(&v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.BGPConfigurationSpec{ASN: 64512}})
	secrets := cache.NewStore(cache.MetaNamespaceKeyFunc)
	_ = secrets.Add(&v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: v1alpha1.PasswordSecretName},
		Data: map[string][]byte{"tor": []byte("s3cret-pw")}})
	e.desired = Desired{Enabled: true,
		Global:    Global{ASN: 64512, RouterID: netip.MustParseAddr("10.0.1.11"), GracefulRestart: GracefulRestart{Enabled: true, RestartTime: 120 * time.Second}},
		Neighbors: []Neighbor{ctlTorPeer},
		Paths:     []Path{{Prefix: netip.MustParsePrefix("10.244.1.0/24"), Origin: "podCIDR"}},
		Import:    ImportPolicy{Install: true, Reject: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Cluster: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
	}
	ctl, err := New(Config{NodeName: "n1", Nodes: corelisters.NewNodeLister(nodes),
		Sources: func() (*Sources, bool) {
			if !e.served {
				return nil, true
			}
			return &Sources{Configurations: e.objects, Passwords: secrets}, true
		},
		NewSpeaker: func() Speaker { return e.speaker }, Kernel: e.kernel, Status: e.status,
		StateFile: filepath.Join(e.stateDir, "bgp.json"), BootID: func() (string, error) { return "boot-1", nil },
		Compute: func(in Input) (Desired, []Problem) {
			e.input = in
			return e.desired, e.problems
		},
		Recorder: e.events, Now: func() time.Time { return e.now }, StatusInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	e.ctl = ctl
	return e
}

func (e *ctlEnv) sync() {
	e.t.Helper()
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(e.logs), textlogger.Verbosity(10)))
	if err := e.ctl.Sync(klog.NewContext(context.Background(), logger)); err != nil {
		e.t.Fatal(err)
	}
}

func learnedRoute(p, nh string) LearnedRoute {
	return LearnedRoute{Prefix: netip.MustParsePrefix(p), NextHop: netip.MustParseAddr(nh), Neighbor: ctlTorAddr}
}

// After a restart, the stale kernel routes stay until the established
// neighbour's End-of-RIB; then those the speaker did not learn again go,
// and every later sync sweeps.
func TestSweepWithheldUntilEndOfRIB(t *testing.T) {
	stale := KernelRoute{Prefix: netip.MustParsePrefix("198.18.200.0/24"), NextHop: ctlTorAddr}
	e := newCtlEnv(t, stale)
	e.speaker.set([]PeerState{{Address: ctlTorAddr, ASN: 65000, State: StateEstablished, GracefulRestart: "Negotiated"}}, []LearnedRoute{learnedRoute("198.18.100.0/24", "10.0.1.1")})
	e.sync()
	if e.kernel.sweeps[0] || !e.kernel.has("198.18.200.0/24") || !e.kernel.has("198.18.100.0/24") {
		t.Fatalf("before End-of-RIB: sweep %v, kernel %v; want the stale route kept and the learned one added", e.kernel.sweeps, e.kernel.routes)
	}
	e.now = e.now.Add(time.Hour) // time alone does not sweep an established neighbour's routes
	e.sync()
	if !e.kernel.has("198.18.200.0/24") {
		t.Fatal("stale route swept before the established neighbour's End-of-RIB")
	}
	e.speaker.set([]PeerState{{Address: ctlTorAddr, ASN: 65000, State: StateEstablished, GracefulRestart: "Negotiated", EndOfRIB: true}}, []LearnedRoute{learnedRoute("198.18.100.0/24", "10.0.1.1")})
	e.sync()
	if e.kernel.has("198.18.200.0/24") || !e.kernel.has("198.18.100.0/24") {
		t.Fatalf("after End-of-RIB: kernel %v, want the stale route swept", e.kernel.routes)
	}
	// A session reset later (no End-of-RIB yet) does not stop sweeping:
	// the speaker's learned set is complete by then (GR keeps stale paths).
	e.speaker.set([]PeerState{{Address: ctlTorAddr, ASN: 65000, State: StateEstablished}}, nil)
	e.sync()
	if e.kernel.has("198.18.100.0/24") {
		t.Error("a withdrawn route stayed after convergence")
	}
}

// A neighbour that does not come back holds the sweep for the restart
// time since the speaker started, not longer.
func TestSweepAfterRestartTimeForNeighbourNotBack(t *testing.T) {
	e := newCtlEnv(t, KernelRoute{Prefix: netip.MustParsePrefix("198.18.200.0/24"), NextHop: ctlTorAddr})
	e.speaker.set([]PeerState{{Address: ctlTorAddr, ASN: 65000, State: StateActive}}, nil)
	e.sync()
	e.now = e.now.Add(119 * time.Second)
	e.sync()
	if !e.kernel.has("198.18.200.0/24") {
		t.Fatal("stale route swept before the restart time")
	}
	e.now = e.now.Add(time.Second)
	e.sync()
	if e.kernel.has("198.18.200.0/24") {
		t.Fatal("stale route kept after the restart time with the neighbour still down")
	}
}

// The learned routes are judged again by the import policy: the own pod
// CIDR and cluster addresses never reach the kernel.
func TestImportPolicyEnforcedAgain(t *testing.T) {
	e := newCtlEnv(t)
	e.speaker.set([]PeerState{{Address: ctlTorAddr, State: StateEstablished, EndOfRIB: true}},
		[]LearnedRoute{learnedRoute("10.244.1.0/24", "10.0.1.1"), learnedRoute("10.244.9.0/24", "10.0.1.1"), learnedRoute("198.18.100.0/24", "10.0.1.1")})
	e.sync()
	if e.kernel.has("10.244.1.0/24") || e.kernel.has("10.244.9.0/24") || !e.kernel.has("198.18.100.0/24") {
		t.Errorf("kernel %v: want only 198.18.100.0/24", e.kernel.routes)
	}
}

// The Restart State bit: only when this boot's agent ran BGP before
// (kernel routes of protocol 159, or the state file with this boot's id).
func TestRestartFlagOnlyOnRealRestart(t *testing.T) {
	write := func(e *ctlEnv, boot string) {
		data, _ := json.Marshal(stateRecord{BootID: boot, EstablishedAt: time.Unix(1, 0)})
		if err := os.WriteFile(filepath.Join(e.stateDir, "bgp.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name  string
		setup func(*ctlEnv)
		stale []KernelRoute
		want  bool
	}{
		{"first start after boot", func(*ctlEnv) {}, nil, false},
		{"state file of an earlier boot", func(e *ctlEnv) { write(e, "boot-0") }, nil, false},
		{"state file of this boot", func(e *ctlEnv) { write(e, "boot-1") }, nil, true},
		{"kernel routes survived", func(*ctlEnv) {}, []KernelRoute{{Prefix: netip.MustParsePrefix("198.18.0.0/24"), NextHop: ctlTorAddr}}, true},
		{"graceful restart off", func(e *ctlEnv) { write(e, "boot-1"); e.desired.Global.GracefulRestart.Enabled = false }, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newCtlEnv(t, c.stale...)
			c.setup(e)
			e.sync()
			if got := e.speaker.lastApplied().Global.GracefulRestart.Restarting; got != c.want {
				t.Errorf("Restarting = %v, want %v", got, c.want)
			}
		})
	}
	// The first establishment records this boot for the next start.
	e := newCtlEnv(t)
	e.sync()
	if _, err := os.Stat(filepath.Join(e.stateDir, "bgp.json")); err == nil {
		t.Fatal("state file written before any session established")
	}
	e.speaker.set([]PeerState{{Address: ctlTorAddr, State: StateEstablished}}, nil)
	e.sync()
	restarting, _, err := detectRestart(nil, filepath.Join(e.stateDir, "bgp.json"), "boot-1")
	if err != nil || !restarting {
		t.Errorf("after an establishment the next start is a restart: %v, %v", restarting, err)
	}
}

// The node status names each session after its BGPPeer, carries the
// counters, and says why a session is down and what is misconfigured.
func TestStatusContent(t *testing.T) {
	e := newCtlEnv(t)
	rr := Neighbor{Address: netip.MustParseAddr("10.0.1.12"), ASN: 64512, Source: "node/n2", Internal: true, BFD: BFD{Enabled: true}}
	e.desired.Neighbors = []Neighbor{ctlTorPeer, rr}
	e.problems = []Problem{{Reason: "GracefulRestartWithBFD", Object: "BGPPeer/tor", Message: "GoBGP flushes a neighbour's routes when BFD goes down"}}
	since := time.Unix(900, 0)
	e.speaker.set([]PeerState{
		{Address: ctlTorAddr, ASN: 65000, State: StateActive, Reason: "PasswordMismatch", Message: "no answer to TCP-MD5 signed SYNs"},
		{Address: rr.Address, ASN: 64512, State: StateEstablished, Since: since, Received: 3, Accepted: 2, Advertised: 1, BFD: "Up", GracefulRestart: "Negotiated"},
	}, nil)
	e.sync()
	st := e.status.last(t)
	s := st.Status
	if st.Name != "n1" || s.ASN != 64512 || s.RouterID != "10.0.1.11" || s.Configured != 2 || s.Established != 1 {
		t.Errorf("status %s: asn %d routerID %q configured %d established %d", st.Name, s.ASN, s.RouterID, s.Configured, s.Established)
	}
	if len(s.Peers) != 2 {
		t.Fatalf("peers %+v", s.Peers)
	}
	tor, n2 := s.Peers[0], s.Peers[1]
	if tor.Peer != "tor" || tor.State != "Active" || tor.Reason != "PasswordMismatch" || tor.BFD != "Off" {
		t.Errorf("tor %+v", tor)
	}
	if n2.Peer != "node/n2" || n2.Since == nil || !n2.Since.Time.Equal(since) || n2.Received != 3 || n2.Accepted != 2 || n2.Advertised != 1 || n2.BFD != "Up" || n2.GracefulRestart != "Negotiated" {
		t.Errorf("n2 %+v", n2)
	}
	cond := func(typ string) *metav1.Condition {
		for i := range s.Conditions {
			if s.Conditions[i].Type == typ {
				return &s.Conditions[i]
			}
		}
		t.Fatalf("no condition %s in %+v", typ, s.Conditions)
		return nil
	}
	if c := cond(ConditionSessionsEstablished); c.Status != metav1.ConditionFalse || c.Reason != "PasswordMismatch" || !strings.Contains(c.Message, "tor (10.0.1.1)") {
		t.Errorf("SessionsEstablished %+v", c)
	}
	if c := cond("GracefulRestartWithBFD"); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "BGPPeer/tor") {
		t.Errorf("problem condition %+v", c)
	}
	if c := cond(ConditionEnabled); c.Status != metav1.ConditionTrue {
		t.Errorf("Enabled %+v", c)
	}
	// The same state again writes nothing; the tor's session coming up
	// writes once more, keeping the unchanged conditions' transition time.
	n := len(e.status.written)
	e.now = e.now.Add(time.Minute)
	e.sync()
	if len(e.status.written) != n {
		t.Errorf("an unchanged status was written again")
	}
	e.speaker.set([]PeerState{{Address: ctlTorAddr, ASN: 65000, State: StateEstablished}, {Address: rr.Address, State: StateEstablished}}, nil)
	e.sync()
	s = e.status.last(t).Status
	if s.Established != 2 || cond(ConditionSessionsEstablished).Status != metav1.ConditionTrue {
		t.Errorf("after the tor came up: %+v", s)
	}
	if c := cond(ConditionEnabled); !c.LastTransitionTime.Time.Equal(time.Unix(1000, 0)) {
		t.Errorf("Enabled transition time %v moved", c.LastTransitionTime)
	}
	// Problems are logged and recorded as an Event once.
	if got := strings.Count(e.logs.String(), "GracefulRestartWithBFD"); got != 1 {
		t.Errorf("problem logged %d times, want once:\n%s", got, e.logs)
	}
	if len(e.events.Events) != 1 {
		t.Errorf("%d events, want one", len(e.events.Events))
	}
}

// Without the CRDs BGP is off: no speaker, no status, the kernel left
// alone, said once. When they appear (the agent's recheck) it turns on.
func TestCRDsAbsentOffAndSaidOnce(t *testing.T) {
	e := newCtlEnv(t, KernelRoute{Prefix: netip.MustParsePrefix("198.18.200.0/24"), NextHop: ctlTorAddr})
	e.served = false
	for range 3 {
		e.sync()
	}
	if len(e.speaker.applied) != 0 || len(e.status.written) != 0 || len(e.kernel.sweeps) != 0 {
		t.Errorf("CRDs absent: speaker %v, status %d, kernel applies %d; want nothing", e.speaker.applied, len(e.status.written), len(e.kernel.sweeps))
	}
	if got := strings.Count(e.logs.String(), "BGP is off"); got != 1 || !strings.Contains(e.logs.String(), "CRDs are not installed") {
		t.Errorf("said %d times, want once:\n%s", got, e.logs)
	}
	e.served = true
	e.sync()
	if len(e.speaker.applied) != 1 || !e.speaker.lastApplied().Enabled {
		t.Errorf("CRDs installed: speaker %v, want it started", e.speaker.applied)
	}
	// The BGPConfiguration deleted: the speaker stops, the routes go.
	_ = e.objects.Delete(&v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	e.now = e.now.Add(time.Second)
	e.sync()
	if e.speaker.lastApplied().Enabled || e.kernel.has("198.18.200.0/24") {
		t.Errorf("configuration deleted: speaker %+v, kernel %v", e.speaker.lastApplied(), e.kernel.routes)
	}
	if c := e.status.last(t).Status.Conditions; len(c) != 1 || c[0].Reason != "NoConfiguration" {
		t.Errorf("status conditions %+v", c)
	}
}

// The password from the Secret reaches Compute and the speaker, and
// nothing else: not the logs (at the highest verbosity), the node status
// or the Events.
func TestPasswordNeverInLogsOrStatus(t *testing.T) {
	e := newCtlEnv(t)
	e.problems = []Problem{{Reason: "InvalidPeer", Object: "BGPPeer/tor", Message: "bad"}}
	e.speaker.set([]PeerState{{Address: ctlTorAddr, State: StateActive, Reason: "PasswordMismatch"}}, nil)
	e.sync()
	if e.input.Passwords["tor"] != "s3cret-pw" {
		t.Fatalf("Compute got passwords %v", e.input.Passwords)
	}
	if got := e.speaker.lastApplied().Neighbors[0].Password; got != "s3cret-pw" {
		t.Fatalf("speaker got password %q", got)
	}
	if !strings.Contains(e.logs.String(), "Desired speaker state") {
		t.Fatalf("the desired state was not logged at V(5); the test proves nothing:\n%s", e.logs)
	}
	st, _ := json.Marshal(e.status.last(t))
	var events []string
	for len(e.events.Events) > 0 {
		events = append(events, <-e.events.Events)
	}
	for what, s := range map[string]string{"logs": e.logs.String(), "status": string(st), "events": strings.Join(events, "\n")} {
		if strings.Contains(s, "s3cret-pw") {
			t.Errorf("the password is in the %s:\n%s", what, s)
		}
	}
}

// No speaker built in: BGP off, a Warning Event and the reason, once.
func TestSpeakerNotBuiltIn(t *testing.T) {
	e := newCtlEnv(t)
	e.ctl.cfg.NewSpeaker = nil
	e.sync()
	e.sync()
	if len(e.events.Events) != 1 || !strings.Contains(<-e.events.Events, "BGPSpeakerMissing") {
		t.Error("want one BGPSpeakerMissing event")
	}
}

// Whatever the speaker or Compute put in a reason, the conditions stay
// valid for the API (an invalid one would fail the whole apply).
func TestStatusConditionsValid(t *testing.T) {
	st := buildStatus("n1", Desired{Enabled: true, Neighbors: []Neighbor{ctlTorPeer}}, "",
		[]PeerState{{Address: ctlTorAddr, State: StateActive, Reason: "Hold timer expired"}},
		[]Problem{{Reason: "", Message: "x"}, {Reason: "bad reason!", Message: "y"}}, nil, time.Unix(1, 0))
	for _, c := range st.Status.Conditions {
		if !conditionReasonRE.MatchString(c.Reason) || !conditionReasonRE.MatchString(c.Type) || c.LastTransitionTime.IsZero() {
			t.Errorf("invalid condition %+v", c)
		}
	}
	if st.Status.Peers[0].Reason != "Hold timer expired" {
		t.Errorf("the peer's own reason is kept in its entry: %+v", st.Status.Peers[0])
	}
}

// Status writes are rate-limited: a change within StatusInterval of the
// last write waits for a later sync.
func TestStatusRateLimited(t *testing.T) {
	e := newCtlEnv(t)
	e.ctl.cfg.StatusInterval = 10 * time.Second
	e.sync()
	n := len(e.status.written)
	e.speaker.set([]PeerState{{Address: ctlTorAddr, State: StateEstablished}}, nil)
	e.now = e.now.Add(time.Second)
	e.sync()
	if len(e.status.written) != n {
		t.Fatal("a change 1 s after the last write was written at once")
	}
	e.now = e.now.Add(10 * time.Second)
	e.sync()
	if len(e.status.written) != n+1 || e.status.last(t).Status.Established != 1 {
		t.Errorf("the change was not written after the interval: %d writes", len(e.status.written))
	}
}

// Before the first discovery answer nothing happens and nothing is said:
// an agent starting with the CRDs installed does not log them missing.
func TestUnknownServedDoesNothing(t *testing.T) {
	e := newCtlEnv(t)
	e.ctl.cfg.Sources = func() (*Sources, bool) { return nil, false }
	e.sync()
	if len(e.speaker.applied) != 0 || len(e.kernel.sweeps) != 0 || len(e.status.written) != 0 || strings.Contains(e.logs.String(), "BGP is off") {
		t.Errorf("undecided: speaker %v kernel %v status %d logs\n%s", e.speaker.applied, e.kernel.sweeps, len(e.status.written), e.logs)
	}
}

// A session without graceful restart never sends End-of-RIB: its stale
// routes go after the restart time, not never.
func TestSweepWithoutGracefulRestart(t *testing.T) {
	e := newCtlEnv(t, KernelRoute{Prefix: netip.MustParsePrefix("198.18.200.0/24"), NextHop: ctlTorAddr})
	e.speaker.set([]PeerState{{Address: ctlTorAddr, State: StateEstablished, GracefulRestart: "Off"}}, nil)
	e.sync()
	if !e.kernel.has("198.18.200.0/24") {
		t.Fatal("swept at once")
	}
	e.now = e.now.Add(120 * time.Second)
	e.sync()
	if e.kernel.has("198.18.200.0/24") {
		t.Fatal("stale route kept past the restart time on a session without graceful restart")
	}
}

// A route the kernel side cannot install is a problem, not a failed sync.
func TestRouteNotInstalledIsAProblem(t *testing.T) {
	e := newCtlEnv(t)
	k := &failingKernel{ctlKernel: e.kernel}
	e.ctl.cfg.Kernel = k
	e.speaker.set([]PeerState{{Address: ctlTorAddr, State: StateEstablished}}, []LearnedRoute{learnedRoute("198.18.100.0/24", "10.9.9.9")})
	e.sync() // fails the test on a sync error
	if c := e.status.last(t).Status.Conditions; !hasCondition(c, "RouteNotInstalled") {
		t.Errorf("conditions %+v, want RouteNotInstalled", c)
	}
}

type failingKernel struct{ *ctlKernel }

func (k *failingKernel) Apply(want []KernelRoute, sweep bool) ([]KernelRoute, error) {
	var errs []error
	for _, r := range want {
		errs = append(errs, &KernelRouteError{Route: r, Err: errors.New("next hop unreachable")})
	}
	return nil, errors.Join(errs...)
}

func hasCondition(cs []metav1.Condition, typ string) bool {
	for _, c := range cs {
		if c.Type == typ && c.Status == metav1.ConditionTrue {
			return true
		}
	}
	return false
}

// A speaker that cannot start (its port refused) is said in the node
// status and an Event, and the sync fails (retried).
func TestSpeakerFailureInStatus(t *testing.T) {
	e := newCtlEnv(t)
	e.speaker.err = errors.New("listen tcp4 10.0.1.11:179: bind: permission denied")
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(e.logs)))
	if err := e.ctl.Sync(klog.NewContext(context.Background(), logger)); err == nil {
		t.Fatal("sync succeeded with a failing speaker")
	}
	st := e.status.last(t)
	if !hasCondition(st.Status.Conditions, "SpeakerFailed") {
		t.Errorf("conditions %+v, want SpeakerFailed", st.Status.Conditions)
	}
}
