//go:build e2e && dualstack

package dualstack

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Services of every family through kube-proxy, to a backend on another
// node (another subnet; the same subnet in native mode): a SingleStack
// Service per family and, with two families, a RequireDualStack one; TCP
// and UDP through each ClusterIP from a pod on the first node.
func TestE2EDualStackServices(t *testing.T) {
	tp := requireAgent(t)
	nodes := lab.Nodes()
	backendNode := nodes[1] // the other subnet
	if mode() == "native" {
		backendNode = nodes[2] // the first node's subnet
	}
	pods := lab.PodPerNode(t, "ds-svc", []string{nodes[0], backendNode})
	ns, backend, _ := connectivity.SplitPodRef(pods[1])
	type svcCase struct {
		name   string
		policy corev1.IPFamilyPolicy
		fams   []topology.ClusterFamily
	}
	var cases []svcCase
	for _, f := range tp.ClusterFamilies() {
		cases = append(cases, svcCase{"single-" + f.Name(), corev1.IPFamilyPolicySingleStack, []topology.ClusterFamily{f}})
	}
	if len(tp.ClusterFamilies()) > 1 {
		cases = append(cases, svcCase{"dual", corev1.IPFamilyPolicyRequireDualStack, tp.ClusterFamilies()})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var fams []corev1.IPFamily
			for _, f := range c.fams {
				fams = append(fams, ipFamily(f))
			}
			svc, err := lab.CS.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: c.name},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"pod": backend}, IPFamilyPolicy: &c.policy, IPFamilies: fams,
					Ports: []corev1.ServicePort{
						{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP},
						{Name: "udp", Port: 8081, TargetPort: intstr.FromInt32(81), Protocol: corev1.ProtocolUDP}}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("creating Service %s (%s %v): %v", c.name, c.policy, fams, err)
			}
			if len(svc.Spec.ClusterIPs) != len(c.fams) {
				t.Fatalf("Service %s: ClusterIPs %v, want %d", c.name, svc.Spec.ClusterIPs, len(c.fams))
			}
			for i, f := range c.fams {
				ip := netip.MustParseAddr(svc.Spec.ClusterIPs[i])
				if !f.ServiceCIDR.Contains(ip) {
					t.Errorf("ClusterIP %s is not in the %s Service range %s", ip, f.Name(), f.ServiceCIDR)
				}
				for _, pp := range []struct {
					port  int
					proto string
				}{{8080, "tcp"}, {8081, "udp"}} {
					what := fmt.Sprintf("%s (on %s) -> %s ClusterIP [%s]:%d/%s -> %s (on %s)", pods[0], nodes[0], f.Name(), ip, pp.port, pp.proto, pods[1], backendNode)
					took := eventually(t, 30*time.Second, what, func() error {
						return probe.ProbeFromNetns(lab.PodNetns(t, pods[0]), probe.Target{Addr: ip.String(), Port: pp.port, Proto: pp.proto}, 2*time.Second)
					})
					t.Logf("%s after %v", what, took.Round(time.Millisecond))
				}
			}
		})
	}
}

func ipFamily(f topology.ClusterFamily) corev1.IPFamily {
	if f.IPv6 {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}
