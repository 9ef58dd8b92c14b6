package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	bgpv1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

var bgpNow = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func bgpConfig() *bgpv1alpha1.BGPConfiguration {
	return &bgpv1alpha1.BGPConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "bgp.trellis.dev/v1alpha1", Kind: "BGPConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec:       bgpv1alpha1.BGPConfigurationSpec{ASN: 64512},
	}
}

func nodeStatus(node string, configured int32, peers ...bgpv1alpha1.PeerStatus) *bgpv1alpha1.BGPNodeStatus {
	est := int32(0)
	for _, p := range peers {
		if p.State == "Established" {
			est++
		}
	}
	return &bgpv1alpha1.BGPNodeStatus{
		TypeMeta:   metav1.TypeMeta{APIVersion: "bgp.trellis.dev/v1alpha1", Kind: "BGPNodeStatus"},
		ObjectMeta: metav1.ObjectMeta{Name: node},
		Status: bgpv1alpha1.NodeStatus{ASN: 64512, RouterID: "10.0.1.11", Configured: configured, Established: est, Peers: peers,
			ObservedAt: metav1.NewTime(bgpNow.Add(-10 * time.Second)),
			Conditions: []metav1.Condition{{Type: "GracefulRestartWithBFD", Status: metav1.ConditionTrue, Reason: "BFDAndGracefulRestart",
				Message: "GoBGP flushes a neighbour's routes when BFD goes down"}}},
	}
}

func session(peer, addr, state, reason string) bgpv1alpha1.PeerStatus {
	since := metav1.NewTime(bgpNow.Add(-3 * time.Minute))
	return bgpv1alpha1.PeerStatus{Peer: peer, Address: addr, ASN: 65000, State: state, Since: &since,
		Received: 5, Accepted: 4, Advertised: 2, BFD: "Up", GracefulRestart: "Negotiated", Reason: reason}
}

func bgpOptions(t *testing.T, nodes []string, objs ...runtime.Object) (*Options, *bytes.Buffer) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := bgpv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
		BGPNodeStatusResource:    "BGPNodeStatusList",
		BGPConfigurationResource: "BGPConfigurationList",
	}, objs...)
	var coreObjs []runtime.Object
	for _, n := range nodes {
		coreObjs = append(coreObjs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	var out bytes.Buffer
	o := &Options{Out: &out, ErrOut: &out}
	o.SetClients(&rest.Config{}, fake.NewClientset(coreObjs...))
	o.SetDynamic(dyn)
	return o, &out
}

func TestBGPStatusAllEstablished(t *testing.T) {
	o, out := bgpOptions(t, []string{"node1", "node2"}, bgpConfig(),
		nodeStatus("node1", 1, session("tor", "10.0.1.1", "Established", "")),
		nodeStatus("node2", 1, session("tor", "10.0.2.1", "Established", "")))
	err := o.runBGPStatus(context.Background(), nil, bgpStatusFlags{now: func() time.Time { return bgpNow }})
	if err != nil {
		t.Fatalf("exit %d: %v", ExitCode(err), err)
	}
	want := `NODE    PEER   ADDRESS    ASN     STATE         SINCE   RCV/ACC/ADV   BFD   GR           REASON
node1   tor    10.0.1.1   65000   Established   3m      5/4/2         Up    Negotiated   -
node2   tor    10.0.2.1   65000   Established   3m      5/4/2         Up    Negotiated   -
2 nodes, 2 sessions: 2 established, 0 not
`
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestBGPStatusSessionDownIsExit1(t *testing.T) {
	o, out := bgpOptions(t, []string{"node1", "node2", "node3"}, bgpConfig(),
		nodeStatus("node1", 2, session("tor", "10.0.1.1", "Established", ""), session("node/node2", "10.0.1.12", "Active", "PasswordMismatch")),
		nodeStatus("node2", 3, session("tor", "10.0.1.1", "Established", "")), // two configured sessions not listed
		nodeStatus("gone", 0))
	err := o.runBGPStatus(context.Background(), nil, bgpStatusFlags{output: OutputWide, now: func() time.Time { return bgpNow }})
	if ExitCode(err) != ExitFailed {
		t.Fatalf("exit %d (%v), want 1", ExitCode(err), err)
	}
	for _, frag := range []string{"3 of 5 BGP sessions not established", "node1 → node/node2 (10.0.1.12): Active, PasswordMismatch",
		"node2: 2 configured session(s) not reported"} {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error %q lacks %q", err, frag)
		}
	}
	s := out.String()
	for _, frag := range []string{
		"node3   -", "no BGPNodeStatus",
		"gone    -", "node deleted; no session configured",
		"node1 condition GracefulRestartWithBFD=True: BFDAndGracefulRestart GoBGP flushes",
		"LOCAL ASN", "10s", // observed age in wide
		"4 nodes, 5 sessions: 2 established, 3 not; 1 node(s) without a BGPNodeStatus",
	} {
		if !strings.Contains(s, frag) {
			t.Errorf("output lacks %q:\n%s", frag, s)
		}
	}
}

func TestBGPStatusStructuredAndNodeFilter(t *testing.T) {
	o, out := bgpOptions(t, []string{"node1", "node2"}, bgpConfig(),
		nodeStatus("node1", 1, session("tor", "10.0.1.1", "Established", "")),
		nodeStatus("node2", 1, session("tor", "10.0.2.1", "Idle", "PeerUnreachable")))
	if err := o.runBGPStatus(context.Background(), []string{"node1"}, bgpStatusFlags{output: OutputJSON}); err != nil {
		t.Fatalf("node1 only: %v (node2's session must not count)", err)
	}
	var rep BGPStatusReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Nodes) != 1 || rep.Nodes[0].Status == nil || rep.Nodes[0].Status.Peers[0].Address != "10.0.1.1" ||
		rep.Summary.Sessions != 1 || rep.Summary.Established != 1 {
		t.Errorf("report %+v", rep)
	}
	err := o.runBGPStatus(context.Background(), []string{"nosuch"}, bgpStatusFlags{})
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), `node "nosuch" not found`) {
		t.Errorf("unknown node: exit %d %v, want 2", ExitCode(err), err)
	}
}

func TestBGPStatusOffOrNotInstalledIsExit2(t *testing.T) {
	o, _ := bgpOptions(t, []string{"node1"}) // no BGPConfiguration
	err := o.runBGPStatus(context.Background(), nil, bgpStatusFlags{})
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "BGP is off") {
		t.Errorf("without BGPConfiguration: exit %d %v, want 2 saying BGP is off", ExitCode(err), err)
	}

	o, _ = bgpOptions(t, []string{"node1"})
	o.dyn.(*dynfake.FakeDynamicClient).PrependReactor("list", "bgpnodestatuses", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "bgp.trellis.dev", Resource: "bgpnodestatuses"}, "")
	})
	err = o.runBGPStatus(context.Background(), nil, bgpStatusFlags{})
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "BGP is not installed") {
		t.Errorf("without the CRDs: exit %d %v, want 2 saying BGP is not installed", ExitCode(err), err)
	}

	o, _ = bgpOptions(t, []string{"node1"}, bgpConfig())
	o.dyn.(*dynfake.FakeDynamicClient).PrependReactor("list", "bgpnodestatuses", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd down")
	})
	if err := o.runBGPStatus(context.Background(), nil, bgpStatusFlags{}); ExitCode(err) != ExitError {
		t.Errorf("API error: exit %d %v, want 3", ExitCode(err), err)
	}
}

func TestBGPCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		msg  string
	}{
		{[]string{"bgp"}, ExitUsage, "needs a subcommand"},
		{[]string{"bgp", "status", "-o", "xml"}, ExitUsage, "unknown output format"},
	} {
		var out, errOut bytes.Buffer
		if got := Run(context.Background(), "v9", tc.args, &out, &errOut); got != tc.want || !strings.Contains(errOut.String(), tc.msg) {
			t.Errorf("%v: exit %d stderr %q, want %d and %q", tc.args, got, errOut.String(), tc.want, tc.msg)
		}
	}
}
