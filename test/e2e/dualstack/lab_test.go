//go:build e2e && dualstack

package dualstack

import (
	"context"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Every Node has one InternalIP per family, the lab's planned underlay
// addresses in the family order, and one pod CIDR per family: a /24 out of
// 10.244.0.0/16 and a /64 out of the IPv6 /48.
func TestE2EDualStackNodes(t *testing.T) {
	tp := topo(t)
	fams := tp.ClusterFamilies()
	nodes, err := lab.CS.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != len(tp.Nodes) {
		t.Fatalf("%d Nodes, the lab has %d", len(nodes.Items), len(tp.Nodes))
	}
	seen := map[string]string{}
	for _, n := range nodes.Items {
		h, err := tp.Node(n.Name)
		if err != nil {
			t.Fatal(err)
		}
		var internal []netip.Addr
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = append(internal, netip.MustParseAddr(a.Address))
			}
		}
		if want := tp.HostIPs(h); !slices.Equal(internal, want) {
			t.Errorf("%s: InternalIPs %v, want %v", n.Name, internal, want)
		}
		if len(n.Spec.PodCIDRs) != len(fams) {
			t.Errorf("%s: pod CIDRs %v, want one per family (%d)", n.Name, n.Spec.PodCIDRs, len(fams))
			continue
		}
		for i, f := range fams {
			p, err := netip.ParsePrefix(n.Spec.PodCIDRs[i])
			if err != nil || p.Bits() != f.NodeMaskSize || !f.ClusterCIDR.Contains(p.Addr()) {
				t.Errorf("%s: pod CIDR %s, want a /%d of %s", n.Name, n.Spec.PodCIDRs[i], f.NodeMaskSize, f.ClusterCIDR)
			}
			if other, dup := seen[n.Spec.PodCIDRs[i]]; dup {
				t.Errorf("%s and %s share pod CIDR %s", n.Name, other, n.Spec.PodCIDRs[i])
			}
			seen[n.Spec.PodCIDRs[i]] = n.Name
		}
		t.Logf("%s: InternalIPs %v, pod CIDRs %v", n.Name, internal, n.Spec.PodCIDRs)
	}
}

// A Service asking for every family of the lab gets a ClusterIP of each,
// in the family's Service range; kube-proxy on every node programs each
// (the ip and ip6 kube-proxy tables); kube-dns has the lab's two addresses.
func TestE2EDualStackService(t *testing.T) {
	tp := topo(t)
	fams := tp.ClusterFamilies()
	ctx := context.Background()
	ns := lab.Namespace(t, "dual", nil)
	policy, families := corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{}
	if len(fams) > 1 {
		policy = corev1.IPFamilyPolicyRequireDualStack
	}
	for _, f := range fams {
		families = append(families, map[bool]corev1.IPFamily{false: corev1.IPv4Protocol, true: corev1.IPv6Protocol}[f.IPv6])
	}
	svc, err := lab.CS.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{IPFamilyPolicy: &policy, IPFamilies: families, Selector: map[string]string{"pod": "a"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a %s Service: %v", policy, err)
	}
	if len(svc.Spec.ClusterIPs) != len(fams) {
		t.Fatalf("Service ClusterIPs %v, want one per family", svc.Spec.ClusterIPs)
	}
	for i, f := range fams {
		if a, err := netip.ParseAddr(svc.Spec.ClusterIPs[i]); err != nil || !f.ServiceCIDR.Contains(a) {
			t.Errorf("ClusterIP %s is not in %s", svc.Spec.ClusterIPs[i], f.ServiceCIDR)
		}
	}
	t.Logf("Service %s/web: %s, ClusterIPs %v", ns, policy, svc.Spec.ClusterIPs)
	dns, err := lab.CS.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wantDNS []string
	for _, a := range tp.ClusterDNSIPs() {
		wantDNS = append(wantDNS, a.String())
	}
	if !slices.Equal(dns.Spec.ClusterIPs, wantDNS) {
		t.Errorf("kube-dns ClusterIPs %v, want %v", dns.Spec.ClusterIPs, wantDNS)
	}
	for _, n := range tp.Nodes {
		for i, f := range fams {
			table := map[bool]string{false: "ip", true: "ip6"}[f.IPv6]
			ip := svc.Spec.ClusterIPs[i]
			err := kube.Poll(ctx, 200*time.Millisecond, 20*time.Second, func(context.Context) (bool, error) {
				out, err := exec.Command("ip", "netns", "exec", n.Netns, "nft", "list", "table", table, "kube-proxy").CombinedOutput()
				return err == nil && strings.Contains(string(out), ip), nil
			})
			if err != nil {
				t.Errorf("%s: kube-proxy's %s table never held ClusterIP %s: %v", n.Name, table, ip, err)
			}
		}
	}
}

// The underlay carries IPv6: nodes reach each other on their subnet and
// across the router, the control plane and the external host, and the
// external host reaches every node; the router knows only the lab's
// subnets, so nothing leaves the lab.
func TestE2EDualStackUnderlay(t *testing.T) {
	tp := topo(t)
	hosts := append([]topology.Host{tp.ControlPlane, tp.External}, tp.Nodes...)
	for _, from := range hosts {
		for _, to := range hosts {
			if from.Name == to.Name {
				continue
			}
			out, err := exec.Command("ip", "netns", "exec", from.Netns, "ping", "-6", "-n", "-c", "1", "-W", "2", to.Addr6.String()).CombinedOutput()
			if err != nil {
				t.Errorf("ping -6 %s → %s (%s): %v\n%s", from.Name, to.Name, to.Addr6, err, out)
			}
		}
	}
	out, err := exec.Command("ip", "-n", tp.RouterNetns, "-6", "route", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dst, err := netip.ParsePrefix(strings.Fields(l)[0])
		if err != nil || dst.Bits() < 64 || !(dst.Addr().IsLinkLocalUnicast() || (dst.Addr().IsPrivate() && strings.Contains(l, "proto kernel"))) {
			t.Errorf("router route %q is not one of the lab's connected subnets", l)
		}
	}
	t.Logf("ping -6 between %d hosts (control plane, external, nodes) in every direction", len(hosts))
}
