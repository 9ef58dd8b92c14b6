package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/dpbench"
)

// fakeProbe returns scripted values per side and records the call order.
type fakeProbe struct {
	calls     []string
	values    map[string][]float64 // "pod tput bbr" -> values in turn
	avail     map[string][]string
	failAfter int // fail the call with this index (1-based); 0 never
}

func (f *fakeProbe) next(key string) (float64, error) {
	f.calls = append(f.calls, key)
	if f.failAfter > 0 && len(f.calls) == f.failAfter {
		return 0, errors.New("connection refused")
	}
	v := f.values[key]
	if len(v) == 0 {
		return 0, fmt.Errorf("no value scripted for %s", key)
	}
	f.values[key] = v[1:]
	return v[0], nil
}

func (f *fakeProbe) Throughput(_ context.Context, side BenchSide, cc string, _ int) (float64, error) {
	return f.next(string(side) + " tput " + cc)
}
func (f *fakeProbe) RR(_ context.Context, side BenchSide, _ int) (float64, error) {
	return f.next(string(side) + " rr")
}
func (f *fakeProbe) Congestion(context.Context) (map[string][]string, error) { return f.avail, nil }

func TestMeasureBenchInterleavesAndSummarises(t *testing.T) {
	f := &fakeProbe{
		values: map[string][]float64{
			"pod tput bbr": {8, 9, 7}, "node tput bbr": {10, 12, 9},
			"pod rr": {100, 300, 200}, "node rr": {400, 200, 300},
		},
		avail: map[string][]string{"n1": {"reno", "bbr", "cubic"}, "n2": {"reno", "bbr"}},
	}
	var log []string
	rep, err := measureBench(context.Background(), f, BenchConfig{Runs: 3, Seconds: 1, Congestion: []string{"bbr", "cubic"}},
		func(format string, a ...any) { log = append(log, fmt.Sprintf(format, a...)) })
	if err != nil {
		t.Fatal(err)
	}
	wantCalls := "pod tput bbr,node tput bbr,pod tput bbr,node tput bbr,pod tput bbr,node tput bbr,pod rr,node rr,pod rr,node rr,pod rr,node rr"
	if got := strings.Join(f.calls, ","); got != wantCalls {
		t.Errorf("calls\n %s\nwant (pod, node interleaved; cubic never run)\n %s", got, wantCalls)
	}
	if len(rep.Results) != 3 {
		t.Fatalf("results %+v, want bbr, cubic (skipped), rr", rep.Results)
	}
	bbr, cubic, rr := rep.Results[0], rep.Results[1], rep.Results[2]
	if bbr.Pod.Median != 8 || bbr.Pod.Min != 7 || bbr.Pod.Max != 9 || bbr.Node.Median != 10 || math.Abs(bbr.Ratio-0.8) > 1e-9 {
		t.Errorf("bbr %+v: want pod 8 (7–9), node 10, ratio 0.8", bbr)
	}
	if !strings.Contains(cubic.Skipped, "n2") || !strings.Contains(cubic.Skipped, "reno bbr") || cubic.Pod.Samples != nil {
		t.Errorf("cubic %+v: want skipped naming n2 and what it offers", cubic)
	}
	if rr.Pod.Median != 200 || rr.Node.Median != 300 || math.Abs(rr.Ratio-2.0/3) > 1e-9 || rr.Unit != "transactions/s" {
		t.Errorf("rr %+v: want pod 200, node 300, ratio 0.667", rr)
	}
	if len(log) != 7 || !strings.Contains(log[0], "run 1/3: pod 8 node 10") {
		t.Errorf("progress %q: want one line per run and the skip", log)
	}
}

func TestMeasureBenchStopsOnAFailedRun(t *testing.T) {
	f := &fakeProbe{
		values:    map[string][]float64{"pod tput bbr": {1, 1}, "node tput bbr": {1, 1}},
		avail:     map[string][]string{"n1": {"bbr"}, "n2": {"bbr"}},
		failAfter: 4,
	}
	_, err := measureBench(context.Background(), f, BenchConfig{Runs: 2, Seconds: 1, Congestion: []string{"bbr"}}, func(string, ...any) {})
	if err == nil || !strings.Contains(err.Error(), "node→node") || !strings.Contains(err.Error(), "run 2") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want the failed side, run and cause", err)
	}
	if ExitCode(err) != ExitError {
		t.Errorf("exit %d, want %d", ExitCode(err), ExitError)
	}
	if len(f.calls) != 4 {
		t.Errorf("%d calls after the failure, want it to stop at 4", len(f.calls))
	}
}

func TestPrintBench(t *testing.T) {
	rep := BenchReport{ServerNode: "n1", ClientNode: "n2", Image: dpbench.Image, Runs: 3, Seconds: 5,
		CongestionAvailable: map[string][]string{"n2": {"reno", "bbr"}, "n1": {"reno", "bbr", "cubic"}},
		Results: []BenchResult{
			{Name: "TCP throughput (bbr)", Unit: "Gbit/s", Pod: dpbench.Summarise([]float64{8, 9, 7}), Node: dpbench.Summarise([]float64{10}), Ratio: 0.8},
			{Name: "TCP throughput (cubic)", Unit: "Gbit/s", Skipped: "cubic is not offered by the kernel of node n2"},
			{Name: "TCP 1-byte request/response", Unit: "transactions/s", Pod: dpbench.Summarise([]float64{7726.4, 8637}), Node: dpbench.Summarise([]float64{10980.2}), Ratio: 0.7},
		}}
	var out bytes.Buffer
	if err := printBench(&out, rep); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"from n2 (client) to n1 (server), 3 interleaved runs of 5 s", "on n1: reno bbr cubic\n", "POD ÷ NODE",
		"8 (7–9)", "10 (10–10)", "0.800", "skipped: cubic is not offered", "8182 (7726–8637)", "10980 (10980–10980)"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	if strings.Index(s, "on n1") > strings.Index(s, "on n2") {
		t.Errorf("nodes not in name order:\n%s", s)
	}
}

func TestBenchBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"bench", "--runs", "0"}, "--runs 0"},
		{[]string{"bench", "--seconds", "1000"}, "--seconds 1000"},
		{[]string{"bench", "--nodes", "a"}, "two different nodes"},
		{[]string{"bench", "--nodes", "a,a"}, "two different nodes"},
		{[]string{"bench", "--congestion", "bbr,bbr"}, "distinct"},
		{[]string{"bench", "--congestion", "BBR;x"}, "distinct"},
		{[]string{"bench", "-o", "wide"}, "unknown output format"},
		{[]string{"bench", "extra"}, "unknown command"},
	} {
		var out, errOut bytes.Buffer
		if got := Run(context.Background(), "v9", tc.args, &out, &errOut); got != ExitUsage {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, got, errOut.String())
		}
		if !strings.Contains(errOut.String(), tc.msg) || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("%v: stderr %q, want one line containing %q", tc.args, errOut.String(), tc.msg)
		}
	}
}

func benchNode(name string, ready bool, taint corev1.TaintEffect) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}
	if taint != "" {
		n.Spec.Taints = []corev1.Taint{{Key: "k", Effect: taint}}
	}
	return n
}

func TestBenchNodes(t *testing.T) {
	cs := fake.NewClientset(benchNode("d", true, ""), benchNode("a", false, ""), benchNode("b", true, corev1.TaintEffectNoSchedule),
		benchNode("c", true, corev1.TaintEffectPreferNoSchedule), benchNode("e", true, ""))
	s, c, err := benchNodes(context.Background(), cs, nil)
	if err != nil || s != "c" || c != "d" {
		t.Errorf("default nodes = %q, %q, %v; want c, d (a not Ready, b tainted NoSchedule)", s, c, err)
	}
	s, c, err = benchNodes(context.Background(), cs, []string{"e", "b"})
	if err != nil || s != "e" || c != "b" {
		t.Errorf("--nodes e,b = %q, %q, %v", s, c, err)
	}
	if _, _, err = benchNodes(context.Background(), cs, []string{"e", "zz"}); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), `"zz"`) {
		t.Errorf("unknown node: %v (exit %d), want exit 2 naming it", err, ExitCode(err))
	}
	one := fake.NewClientset(benchNode("a", true, ""))
	if _, _, err = benchNodes(context.Background(), one, nil); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "two Ready") {
		t.Errorf("one node: %v (exit %d), want exit 2", err, ExitCode(err))
	}
}

func TestBenchPods(t *testing.T) {
	o := &Options{}
	o.SetClients(&rest.Config{}, fake.NewClientset())
	d := &benchDeployment{o: o, image: "registry.example/bench:1", server: "n1", client: "n2"}
	for _, tc := range []struct {
		side       BenchSide
		role, node string
		host       bool
		containers int
	}{
		{SidePod, "server", "n1", false, 2}, {SidePod, "client", "n2", false, 1},
		{SideNode, "server", "n1", true, 2}, {SideNode, "client", "n2", true, 1},
	} {
		p := d.pod(tc.side, tc.role)
		if p.Spec.NodeName != tc.node || p.Spec.HostNetwork != tc.host || len(p.Spec.Containers) != tc.containers {
			t.Errorf("%s: node %s hostNetwork %v containers %d; want %s %v %d", p.Name, p.Spec.NodeName, p.Spec.HostNetwork, len(p.Spec.Containers), tc.node, tc.host, tc.containers)
		}
		for _, c := range p.Spec.Containers {
			if c.Image != d.image || c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("%s/%s: image %s %s, want %s IfNotPresent", p.Name, c.Name, c.Image, c.ImagePullPolicy, d.image)
			}
		}
	}
}

func TestPodNotReadyExplains(t *testing.T) {
	p := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "c",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: "image not present"}}}}}}
	if got := podNotReady(p); !strings.Contains(got, "ErrImageNeverPull: image not present") || !strings.Contains(got, "--image") {
		t.Errorf("podNotReady = %q, want the reason and the hint", got)
	}
	p.Status = corev1.PodStatus{PodIP: "10.0.0.1", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if got := podNotReady(p); got != "" {
		t.Errorf("ready pod: %q", got)
	}
}
