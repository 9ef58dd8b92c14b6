//go:build e2e

package connectivity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/clusterdns"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// TestE2EClusterDNS resolves a Service name from a pod on every node the way
// the pod's resolver does (the resolv.conf kubelet wrote into the container:
// nameserver 10.96.0.10, the namespace's search path), over UDP and over TCP
// through the kube-dns Service, and then from every CoreDNS replica directly,
// so that DNS crosses nodes whichever replica kube-proxy picks. Every answer
// must be the Service's ClusterIP; a name that does not exist must be
// answered "no such name". Last, agnhost inside each pod resolves the short
// name with its own resolver and reaches the Service through it.
func TestE2EClusterDNS(t *testing.T) {
	if !l.HasAgent() {
		t.Fatalf("cluster DNS needs pod networking across nodes; the lab runs without the Trellis agent: %s", l.State.AgentError)
	}
	ctx := context.Background()
	nodes := l.Nodes()
	ns := l.Namespace(t, "e2e-dns", nil)
	// One client per node; the Service's one backend is a pod of its own, so
	// that no client reaches itself through the Service (hairpin is not what
	// this test is about).
	backend := framework.PodSpec{Name: "server", Node: nodes[len(nodes)-1], Labels: map[string]string{"app": "web"}}
	specs := []framework.PodSpec{backend}
	for i, n := range nodes {
		specs = append(specs, framework.PodSpec{Name: fmt.Sprintf("c%d", i+1), Node: n})
	}
	pods := l.CreatePods(t, ns, specs, 90*time.Second)[1:]
	svc, err := l.CS.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating service: %v", err)
	}
	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	fqdn := "web." + ns + ".svc." + topology.ClusterDomain

	replicas, err := clusterdns.ReadyPods(ctx, l.CS)
	if err != nil || len(replicas) == 0 {
		t.Fatalf("no ready CoreDNS replica (%v): `trellis-lab status` shows the cluster DNS", err)
	}
	dnsNodes := map[string]bool{}
	for _, r := range replicas {
		dnsNodes[r.Spec.NodeName] = true
		t.Logf("CoreDNS replica %s (%s) on %s", r.Name, r.Status.PodIP, r.Spec.NodeName)
	}
	if len(nodes) > 1 && len(dnsNodes) < 2 {
		t.Errorf("the CoreDNS replicas share node %v: the Deployment's anti-affinity should spread them", dnsNodes)
	}
	t.Logf("service %s = %s; clients %v on %v", fqdn, clusterIP, pods, nodes)

	server := netip.MustParseAddr(topology.ClusterDNSIP)
	for _, p := range pods {
		for _, proto := range []string{"udp", "tcp"} {
			for _, name := range []string{fqdn, "web"} {
				expectAnswer(t, p, name, proto, netip.Addr{}, server, fqdn, clusterIP)
			}
		}
		for _, r := range replicas {
			expectAnswer(t, p, fqdn, "udp", netip.MustParseAddr(r.Status.PodIP), netip.MustParseAddr(r.Status.PodIP), fqdn, clusterIP)
		}
		missing := "nosuch." + ns + ".svc." + topology.ClusterDomain
		if ans, err := l.Prober.(probe.Netns).Lookup(ctx, p, missing, "udp", netip.Addr{}); !errors.Is(err, probe.ErrNoSuchName) {
			t.Errorf("%s: %s answered %v, %v; want no such name", p, missing, ans.Addrs, err)
		}
		expectAgnhostDial(t, p, "web", backend.Name)
	}
}

// expectAnswer looks name up from pod p (retrying for a few seconds: CoreDNS
// learns a new Service through its watch) and checks who answered what.
func expectAnswer(t *testing.T, p, name, proto string, ask, wantServer netip.Addr, fqdn string, want netip.Addr) {
	t.Helper()
	var ans probe.DNSAnswer
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for attempt := 1; ; attempt++ {
		ans, err = l.Prober.(probe.Netns).Lookup(context.Background(), p, name, proto, ask)
		if err == nil && slices.Equal(ans.Addrs, []netip.Addr{want}) {
			if attempt > 1 {
				t.Logf("%s: %s over %s answered at attempt %d", p, name, proto, attempt)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %s over %s (server %s): %v %v; want %s", p, name, proto, ans.Server, ans.Addrs, err, want)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	if ans.Server != wantServer || ans.Name != fqdn+"." {
		t.Errorf("%s: %s over %s was answered by %s as %s; want %s as %s.", p, name, proto, ans.Server, ans.Name, wantServer, fqdn)
	}
}

// expectAgnhostDial asks agnhost netexec in pod p (through its own port 80,
// from inside the pod) to fetch /hostname from host:80: agnhost resolves host
// with the container's resolver, so the answer must name the pod behind the
// Service.
func expectAgnhostDial(t *testing.T, p, host, backend string) {
	t.Helper()
	ctx := context.Background()
	nsName, podName, err := connectivity.SplitPodRef(p)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := l.CS.CoreV1().Pods(nsName).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsPath, err := probe.PodNetns(pod)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return topology.DialInNetns(nsPath, "tcp", "127.0.0.1:80", 2*time.Second)
		}}}
	q := url.Values{"request": {"hostname"}, "host": {host}, "port": {"80"}, "protocol": {"http"}, "tries": {"1"}}
	// Retried for a few seconds: kube-proxy refuses connections to a new
	// Service until it has programmed its endpoints.
	var out struct {
		Responses []string `json:"responses"`
		Errors    []string `json:"errors"`
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out.Responses, out.Errors = nil, nil
		resp, err := client.Get("http://127.0.0.1/dial?" + q.Encode())
		if err != nil {
			t.Errorf("%s: asking agnhost to dial %s: %v", p, host, err)
			return
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil {
			t.Errorf("%s: agnhost /dial answered %s: %v", p, resp.Status, err)
			return
		}
		if len(out.Responses) == 1 && out.Responses[0] == backend {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: agnhost dialled %s:80 by name: responses %v, errors %v; want [%s]", p, host, out.Responses, out.Errors, backend)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}
