package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/policy"
)

func explainCluster() []runtime.Object {
	ns := func(n string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"kubernetes.io/metadata.name": n}}}
	}
	pod := func(name, ips string, lbl map[string]string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, Labels: lbl},
			Spec:   corev1.PodSpec{NodeName: "n1"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if ips != "" {
			for _, ip := range strings.Split(ips, ",") {
				p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
			}
			p.Status.PodIP = p.Status.PodIPs[0].IP
		}
		return p
	}
	port := intstr.FromInt32(80)
	return []runtime.Object{ns("app"),
		pod("web", "10.244.1.2,fd00:244:1::2", map[string]string{"app": "web"}),
		pod("db", "10.244.1.3,fd00:244:1::3", map[string]string{"app": "db"}),
		pod("six", "fd00:244:1::9", map[string]string{"app": "six"}),
		pod("new", "", nil),
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db-in"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
				}},
			}},
	}
}

func runExplain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	root, o := NewRootCommand("v9", &out, &errOut)
	o.SetClients(&rest.Config{}, fake.NewClientset(explainCluster()...))
	root.SetArgs(append([]string{"explain"}, args...))
	err := root.ExecuteContext(context.Background())
	return ExitCode(err), out.String(), errString(err)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestExplainCommand(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"app/web", "app/db", "80"}, ExitOK, "policy app/db-in admits it: ingress rule 1, peer 1: podSelector app=web, port 80/TCP"},
		{[]string{"app/web", "10.244.1.3", "81/tcp"}, ExitFailed, "no rule admits TCP/81 from 10.244.1.2"},
		{[]string{"app/db", "app/web", "80/UDP"}, ExitOK, "not isolated for ingress"},
		{[]string{"192.0.2.1", "app/db", "80"}, ExitFailed, "192.0.2.1 (external)"},
		{[]string{"app/nope", "app/db", "80"}, ExitUsage, `pod app/nope not found`},
		{[]string{"ghost/x", "app/db", "80"}, ExitUsage, `namespace "ghost" not found`},
		{[]string{"app/new", "app/db", "80"}, ExitUsage, "pod app/new has no IP yet"},
		{[]string{"app/web", "app/db", "80/ICMP"}, ExitUsage, "bad protocol"},
		{[]string{"app/web", "app/db", "0"}, ExitUsage, "bad port"},
		{[]string{"192.0.2.1", "192.0.2.2", "80"}, ExitUsage, "neither"},
		{[]string{"app/web", "fd00:244:1::3", "80"}, ExitOK, "policy app/db-in admits it"},
		{[]string{"app/six", "app/db", "80"}, ExitFailed, "no rule admits TCP/80 from fd00:244:1::9"},
		{[]string{"2001:db8::1", "app/db", "80"}, ExitFailed, "2001:db8::1 (external)"},
		{[]string{"192.0.2.1", "app/six", "80"}, ExitUsage, "no address family in common"},
	} {
		code, out, errS := runExplain(t, tc.args...)
		if code != tc.code || !strings.Contains(out+errS, tc.contains) {
			t.Errorf("explain %v: exit %d, want %d; want %q in:\n%s%s", tc.args, code, tc.code, tc.contains, out, errS)
		}
	}
}

func TestExplainJSON(t *testing.T) {
	code, out, _ := runExplain(t, "app/web", "app/db", "80", "-o", "json")
	var r ExplainResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != ExitOK {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if !r.Allowed || r.Source.Pod != "app/web" || r.Ingress.Node != "n1" || len(r.Ingress.Policies) != 1 ||
		r.Ingress.Policies[0].Admitting[0].Rule != 1 || r.Egress.Isolated {
		t.Errorf("unexpected result: %+v", r)
	}
}

func TestTraceRequestsAskTheEnforcingNodes(t *testing.T) {
	pod := func(name, node string, host bool) policy.Endpoint {
		return policy.Endpoint{Pod: &policy.Pod{Namespace: "x", Name: name, NodeName: node, HostNetwork: host},
			Addr: netip.MustParseAddr("10.0.0.1")}
	}
	ext := policy.Endpoint{Addr: netip.MustParseAddr("192.0.2.1")}
	r := &ExplainResult{Protocol: "TCP", Port: 80}
	for _, tc := range []struct {
		name     string
		src, dst policy.Endpoint
		want     string
	}{
		{"same node", pod("a", "n1", false), pod("b", "n1", false), "n1:egress+ingress"},
		{"across nodes", pod("a", "n1", false), pod("b", "n2", false), "n1:egress n2:ingress"},
		{"to own host", pod("a", "n1", false), pod("h", "n1", true), "n1:egress+host"},
		{"from a host", pod("h", "n1", true), pod("b", "n2", false), "n2:ingress"},
		{"from outside", ext, pod("b", "n2", false), "n2:ingress"},
		{"to outside", pod("a", "n1", false), ext, "n1:egress"},
	} {
		var got []string
		for _, q := range traceRequests(r, tc.src, tc.dst) {
			s := q.node + ":"
			switch {
			case q.egress && q.ingress:
				s += "egress+ingress"
			case q.egress:
				s += "egress"
			default:
				s += "ingress"
			}
			if q.dstIsHostOfNode {
				s += "+host"
			}
			got = append(got, s)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: asks %v, want %s", tc.name, got, tc.want)
		}
	}
}
