//go:build e2e

package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// Every node: NetworkUnavailable=False from the agent, the annotations
// peers need, and a Trellis route to each reachable peer's pod subnet.
func TestE2EAgentNodesReadyAndRouted(t *testing.T) {
	requireAgent(t)
	ctx := context.Background()
	nodes, err := l.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		ok := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse && c.Reason == nodesetup.ConditionReason {
				ok = true
			}
		}
		if !ok {
			t.Errorf("node %s: no NetworkUnavailable=False/%s condition: %+v", n.Name, nodesetup.ConditionReason, n.Status.Conditions)
		}
		if n.Annotations[routing.AnnotationNodeIP] != l.NodeHost(t, n.Name).Addr.String() {
			t.Errorf("node %s: annotation %s=%q, want %s", n.Name, routing.AnnotationNodeIP, n.Annotations[routing.AnnotationNodeIP], l.NodeHost(t, n.Name).Addr)
		}
		if mode() != "native" && n.Annotations[routing.AnnotationVTEPMAC] == "" {
			t.Errorf("node %s: no %s annotation in mode %s", n.Name, routing.AnnotationVTEPMAC, mode())
		}
	}
	for _, self := range nodes.Items {
		dp := nodeDataplane(t, self.Name)
		for _, peer := range nodes.Items {
			if peer.Name == self.Name {
				continue
			}
			for _, c := range routing.PodCIDRs(&peer) {
				if got, want := hasRoute(t, dp, c), reachable(self.Name, peer.Name); got != want {
					t.Errorf("node %s: route to %s (%s) present=%v, want %v in mode %s", self.Name, peer.Name, c, got, want, mode())
				}
			}
		}
	}
	if mode() == "native" {
		evs, err := l.CS.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "reason=" + routing.ReasonNotOnSameSubnet})
		if err != nil || len(evs.Items) == 0 {
			t.Errorf("native mode across subnets: no %s Warning event (%v)", routing.ReasonNotOnSameSubnet, err)
		}
	}
}

// Truth table: TCP and UDP between every pair of pods, two pods on the first
// node (same node), one on each other node (same and other subnet).
func TestE2EAgentPodTruthTable(t *testing.T) {
	requireAgent(t)
	nodes := l.Nodes()
	pods := l.PodPerNode(t, "agent-tt", append([]string{nodes[0]}, nodes...))
	expected := connectivity.NewMatrix(pods, true)
	for _, a := range pods {
		for _, b := range pods {
			expected.Set(a, b, reachable(l.NodeOf(t, a), l.NodeOf(t, b)))
		}
	}
	l.ExpectMatrix(t, pods, 80, "tcp", expected)
	l.ExpectMatrix(t, pods, 81, "udp", expected)
}

// Pods reach every node (kubelet's port), nodes reach every pod.
func TestE2EAgentPodToNodeAndNodeToPod(t *testing.T) {
	requireAgent(t)
	nodes := l.Nodes()
	pods := l.PodPerNode(t, "agent-pn", nodes)
	for _, p := range pods {
		src := l.NodeOf(t, p)
		for _, n := range nodes {
			addr := l.NodeHost(t, n).Addr.String()
			// Pod -> node works in every mode: node addresses are outside
			// the cluster CIDR, so cross-subnet traffic is masqueraded.
			if err := probe.ProbeFromNetns(podNetns(t, p), probe.Target{Addr: addr, Port: 10250, Proto: "tcp"}, 3*time.Second); err != nil {
				t.Errorf("pod %s (on %s) -> node %s %s:10250: %v", p, src, n, addr, err)
			}
			podIP := getPod(t, p).Status.PodIP
			err := probe.ProbeFromNetns(framework.NetnsPath(l.NodeHost(t, n).Netns), probe.Target{Addr: podIP, Port: 80, Proto: "tcp"}, 3*time.Second)
			if want := reachable(n, src); (err == nil) != want {
				t.Errorf("node %s -> pod %s (on %s) %s:80: err %v, want reachable=%v", n, p, src, podIP, err, want)
			}
		}
	}
}

// A Service ClusterIP (kube-proxy nftables DNAT) backed by a pod on another node.
func TestE2EAgentServiceClusterIPCrossNode(t *testing.T) {
	requireAgent(t)
	nodes := l.Nodes()
	backendNode := nodes[1] // other subnet than nodes[0]
	if mode() == "native" {
		backendNode = nodes[2] // same subnet as nodes[0]
	}
	pods := l.PodPerNode(t, "agent-svc", []string{nodes[0], backendNode})
	nsName, backend, _ := connectivity.SplitPodRef(pods[1])
	ctx := context.Background()
	svc, err := l.CS.CoreV1().Services(nsName).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"pod": backend},
			Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lastErr error
	took := eventually(t, 30*time.Second, "ClusterIP reachable from "+pods[0], func() bool {
		lastErr = probe.ProbeFromNetns(podNetns(t, pods[0]), probe.Target{Addr: svc.Spec.ClusterIP, Port: 8080, Proto: "tcp"}, 2*time.Second)
		return lastErr == nil
	})
	t.Logf("pod on %s -> ClusterIP %s:8080 -> pod on %s after %v", nodes[0], svc.Spec.ClusterIP, backendNode, took)
}

// Pod -> the lab's external host: the external host sees the node address.
func TestE2EAgentMasqueradeToExternal(t *testing.T) {
	requireAgent(t)
	nodes := l.Nodes()
	pods := l.PodPerNode(t, "agent-masq", nodes)
	ext := l.State.Topology.External
	var ln net.Listener
	inNetns(t, framework.NetnsPath(ext.Netns), func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(ext.Addr.String(), "18080"))
		return err
	})
	defer ln.Close()
	for _, p := range pods {
		node := l.NodeOf(t, p)
		got := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- "accept: " + err.Error()
				return
			}
			got <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}()
		conn, err := topology.DialInNetns(podNetns(t, p), "tcp", net.JoinHostPort(ext.Addr.String(), "18080"), 3*time.Second)
		if err != nil {
			t.Errorf("pod %s (on %s) -> external %s: %v", p, node, ext.Addr, err)
			ln.(*net.TCPListener).SetDeadline(time.Now())
			<-got
			ln.(*net.TCPListener).SetDeadline(time.Time{})
			continue
		}
		src := <-got
		conn.Close()
		if want := l.NodeHost(t, node).Addr.String(); src != want {
			t.Errorf("pod %s (on %s) -> external: source %s, want the node address %s", p, node, src, want)
		}
	}
}

// Full-size UDP datagrams with DF set pass between pods on every path in
// both directions (no fragmentation, no black hole); one byte more is
// refused at the sender (framework.FullSizeUDP).
func TestE2EAgentLargeUDPWithDF(t *testing.T) {
	requireAgent(t)
	nodes := l.Nodes()
	pods := l.PodPerNode(t, "agent-mtu", nodes)
	for i, a := range pods {
		for j, b := range pods {
			if i == j || !reachable(l.NodeOf(t, a), l.NodeOf(t, b)) {
				continue
			}
			framework.FullSizeUDP(t, fmt.Sprintf("%s (%s) <-> %s (%s)", a, l.NodeOf(t, a), b, l.NodeOf(t, b)),
				podNetns(t, a), podAddr(t, a), podNetns(t, b), podAddr(t, b))
		}
	}
}

// A Node added in the API gets a route on every node; deleting it removes
// the route everywhere within a second. Repeated 20 times: the convergence
// figure of the dataplane benchmark (p99 printed).
func TestE2EAgentNodeAddDeleteConvergence(t *testing.T) {
	requireAgent(t)
	ctx := context.Background()
	var dps []*nodeDP
	for _, n := range l.Nodes() {
		dps = append(dps, &nodeDP{name: n, dp: nodeDataplane(t, n)})
	}
	var adds, dels []time.Duration
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("e2e-ghost-%d", i)
		cidr := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", 200+i))
		// Same subnet as the first node, so every mode routes it there.
		base := l.NodeHost(t, l.Nodes()[0]).Addr.As4()
		addr := netip.AddrFrom4([4]byte{base[0], base[1], base[2], byte(200 + i)})
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}},
		}
		created := time.Now()
		if _, err := l.CS.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.CS.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
		// kube-controller-manager updates new Nodes too: a merge patch of
		// the status subresource does not conflict with it.
		patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q}]}}`, addr)
		if _, err := l.CS.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
		var want []*nodeDP
		for _, d := range dps {
			if reachable(d.name, l.Nodes()[0]) {
				want = append(want, d)
			}
		}
		eventually(t, 5*time.Second, "route to "+name+" on every node", func() bool {
			for _, d := range want {
				if !hasRoute(t, d.dp, cidr) {
					return false
				}
			}
			return true
		})
		adds = append(adds, time.Since(created))
		deleted := time.Now()
		if err := l.CS.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, "route to deleted "+name+" gone from every node", func() bool {
			for _, d := range dps {
				if hasRoute(t, d.dp, cidr) {
					return false
				}
			}
			return true
		})
		dels = append(dels, time.Since(deleted))
	}
	t.Logf("route convergence over 20 Node additions (API create -> route on every node): %s", quantiles(adds))
	t.Logf("route removal over 20 Node deletions (API delete -> route gone everywhere): %s", quantiles(dels))
}

type nodeDP struct {
	name string
	dp   *netlinkprog.Programmer
}

func quantiles(d []time.Duration) string {
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("min %v median %v p99 %v max %v", s[0].Round(time.Millisecond), q(0.5).Round(time.Millisecond),
		q(0.99).Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}
