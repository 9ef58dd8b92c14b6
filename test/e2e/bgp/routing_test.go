//go:build e2e

package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/connectivity"
)

// Pod CIDRs travel only through the ToR: it holds each node's pod CIDR
// with that node as the next hop, the lab router's kernel routes to them
// are BIRD's (no static route), every node has the others' pod CIDRs under
// protocol 159, and pods on every pair of nodes, in the same and in
// different subnets, reach each other over TCP and UDP.
func TestE2EBGPPodCIDRsThroughTheToR(t *testing.T) {
	requireBGPLab(t)
	took := waitToR(t, 90*time.Second)
	figure(t, "every node's pod CIDR on the ToR %s after the test started", took.Round(time.Millisecond))
	best := torBest(t)
	for _, n := range l.Nodes() {
		cidr, addr := podCIDR(t, n), nodeHost(t, n).Addr
		if got := best[cidr]; len(got) != 1 || got[0] != addr {
			t.Errorf("ToR: %s (%s) via %v, want via %s alone", cidr, n, got, addr)
		}
		r := routerRoute(t, cidr)
		if !strings.Contains(r, "via "+addr.String()+" ") || !strings.Contains(r, "proto bird") {
			t.Errorf("router kernel: %s: %q, want BIRD's route via %s", cidr, r, addr)
		}
		for _, m := range l.Nodes() {
			if m == n {
				continue
			}
			// Node m reaches n's pods by the route it learned (159).
			out := inNode(t, m, "ip", "-4", "route", "show", "exact", cidr.String(), "proto", "159")
			if strings.TrimSpace(out) == "" {
				t.Errorf("%s has no protocol-159 route to %s's pod CIDR %s:\n%s", m, n, cidr,
					inNode(t, m, "ip", "-4", "route", "show"))
			}
		}
	}
	// Nothing but BIRD routes the pod CIDRs on the router.
	out, err := inNetns(l.State.Topology.RouterNetns, "ip", "-4", "route", "show", "root", "10.244.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && !strings.Contains(line, "proto bird") {
			t.Errorf("router: a pod route not from BIRD: %q", line)
		}
	}
	t.Logf("ToR:\n%s", birdc(t, "show", "route"))

	_, pods := newPods(t, "bgp-routes")
	all := connectivity.NewMatrix(pods, true)
	l.ExpectMatrix(t, pods, 80, "tcp", all)
	l.ExpectMatrix(t, pods, 81, "udp", all)
}

// The external host reaches every pod directly, and the pod sees the
// external host's own address (no masquerade on the way in); the prefix
// the ToR originates is in every node's kernel under protocol 159, via the
// ToR, and the pods reach an address in it.
func TestE2EBGPExternalHost(t *testing.T) {
	requireBGPLab(t)
	waitToR(t, 90*time.Second)
	topo := l.State.Topology
	for _, n := range l.Nodes() {
		gw := nodeHost(t, n).Gateway
		eventually(t, 30*time.Second, n+": the ToR's prefix "+topo.OriginPrefix.String()+" under protocol 159", func() bool {
			out := inNode(t, n, "ip", "-4", "route", "show", "exact", topo.OriginPrefix.String(), "proto", "159")
			return strings.Contains(out, "via "+gw.String())
		})
	}
	_, pods := newPods(t, "bgp-ext")
	for _, p := range pods {
		ip, err := netip.ParseAddr(l.Pod(t, p).Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		body, err := httpGet(extNetns(), sockAddr(ip, 80), "/clientip")
		if err != nil {
			t.Errorf("external host -> %s (%s): %v", p, ip, err)
			continue
		}
		host, _, _ := strings.Cut(body, ":")
		if host != topo.External.Addr.String() {
			t.Errorf("%s saw the external host as %q, want %s (no masquerade)", p, body, topo.External.Addr)
		} else {
			t.Logf("external host -> %s on %s: the pod saw %s", p, l.NodeOf(t, p), body)
		}
	}
	// The pods reach the originated prefix (the external host's address in it).
	srv := startExternalServer(t, topo.OriginAddr, 8080)
	for _, p := range pods {
		if err := dialFromPod(t, p, sockAddr(topo.OriginAddr, 8080)); err != nil {
			t.Errorf("%s -> %s: %v", p, topo.OriginAddr, err)
		}
	}
	t.Logf("the external host's server at %s answered %d connections", topo.OriginAddr, srv())
}

// A Service's external IP and LoadBalancer IP, announced by the nodes, are
// on the ToR and reachable from the external host through it.
func TestE2EBGPServiceAddresses(t *testing.T) {
	requireBGPLab(t)
	nsName, pods := newPods(t, "bgp-svc")
	topo := l.State.Topology
	base := topo.ServicePrefix.Addr().As4()
	base[3] = 10
	extIP := netip.AddrFrom4(base)
	base[3] = 11
	lbIP := netip.AddrFrom4(base)
	ctx := context.Background()
	port := []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}
	sel := map[string]string{"app": "bgp-svc"}
	if _, err := l.CS.CoreV1().Services(nsName).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ext"},
		Spec:       corev1.ServiceSpec{Selector: sel, Ports: port, ExternalIPs: []string{extIP.String()}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lb, err := l.CS.CoreV1().Services(nsName).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "lb"},
		Spec:       corev1.ServiceSpec{Selector: sel, Ports: port, Type: corev1.ServiceTypeLoadBalancer},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The lab has no load-balancer controller: the test plays it.
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP.String()}}
	if _, err := l.CS.CoreV1().Services(nsName).UpdateStatus(ctx, lb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range pods {
		_, name, _ := strings.Cut(p, "/")
		names[name] = true
	}
	for _, a := range []netip.Addr{extIP, lbIP} {
		host := netip.PrefixFrom(a, 32)
		took := eventually(t, 60*time.Second, host.String()+" on the ToR via a node", func() bool {
			return len(torBest(t)[host]) > 0
		})
		figure(t, "Service address %s on the ToR %s after the Service", a, took.Round(time.Millisecond))
		for _, nh := range torBest(t)[host] {
			ok := false
			for _, n := range l.Nodes() {
				ok = ok || nodeHost(t, n).Addr == nh
			}
			if !ok {
				t.Errorf("ToR: %s via %s, not a node", host, nh)
			}
		}
		var body string
		eventually(t, 30*time.Second, "external host -> "+a.String()+":80", func() bool {
			var err error
			body, err = httpGet(extNetns(), sockAddr(a, 80), "/hostname")
			return err == nil
		})
		if !names[body] {
			t.Errorf("external host -> %s answered by %q, not one of the Service's pods", a, body)
		}
		t.Logf("external host -> %s: answered by %s; ToR: %v", a, body, torBest(t)[host])
	}
}
