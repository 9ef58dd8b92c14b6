//go:build e2e

package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/kube"
	labnode "github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// reaches reports whether a TCP connection from netnsPath to ip:80 reached
// the pod: accepted, or refused by it (its server not up yet).
func reaches(netnsPath, ip string) bool {
	c, err := topology.DialInNetns(netnsPath, "tcp4", net.JoinHostPort(ip, "80"), 250*time.Millisecond)
	if err == nil {
		c.Close()
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// holdAgent keeps the agent from running on node, as when it cannot start
// there: the node's containerd loses the name of the agent's image (kept
// under a second name, so its content stays), and the agent pod is
// deleted, so the DaemonSet's replacement is stuck pulling an image the lab
// has no registry for. (Taking the node out of the DaemonSet's nodeSelector
// does not hold: the kubelet puts its kubernetes.io/os label back at its
// next status update.) It waits until no agent container runs on node.
// The returned function names the image again and deletes the stuck pod,
// so the DaemonSet starts a working agent at once.
func holdAgent(t *testing.T, node string) (release func()) {
	t.Helper()
	ctx := context.Background()
	ref := l.State.Install.Image
	if ref == "" {
		t.Fatal("the lab records no agent image")
	}
	spec, err := labnode.LoadSpec(filepath.Join(l.Paths.Node(node), "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	sock := spec.HostPath(labnode.ContainerdSocket)
	held := strings.SplitN(ref, ":", 2)[0] + ":held-by-e2e"
	ctr := func(args ...string) {
		t.Helper()
		out, err := exec.Command("ctr", append([]string{"--address", sock, "-n", "k8s.io", "images"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: ctr images %v: %v: %s", node, args, err, out)
		}
	}
	agentPods := func() []corev1.Pod {
		t.Helper()
		list, err := l.CS.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{
			LabelSelector: install.AgentSelector, FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			t.Fatal(err)
		}
		return list.Items
	}
	deleteAgents := func() {
		t.Helper()
		for _, p := range agentPods() {
			if err := l.CS.CoreV1().Pods(install.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	old := agentPods()
	ctr("tag", ref, held)
	ctr("rm", ref)
	released := false
	release = func() {
		if !released {
			released = true
			ctr("tag", held, ref)
			ctr("rm", held)
			deleteAgents()
		}
	}
	t.Cleanup(release)
	deleteAgents()
	deadline := time.Now().Add(90 * time.Second)
	for ; ; time.Sleep(250 * time.Millisecond) {
		running := false
		for _, p := range agentPods() {
			for _, o := range old {
				running = running || p.UID == o.UID
			}
			for _, c := range p.Status.ContainerStatuses {
				running = running || c.State.Running != nil
			}
		}
		if !running {
			return release
		}
		if time.Now().After(deadline) {
			t.Fatalf("an agent still runs on %s 90s after its image was withdrawn and its pod deleted", node)
		}
	}
}

// waitSandboxGone waits until node no longer routes ip to a pod interface
// (the plugin's /32 host route goes with the sandbox, on CNI DEL).
func waitSandboxGone(t *testing.T, node, ip string) {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err := exec.Command("ip", "netns", "exec", h.Netns, "ip", "-4", "route", "show", "exact", ip+"/32").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: ip route show %s: %v: %s", node, ip, err, out)
		}
		if strings.TrimSpace(string(out)) == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still routes %s to a pod 60s after its pod was deleted: %s", node, ip, out)
		}
	}
}

// simulateReboot does to node's kernel and disk what a reboot does while
// the node's pods are gone: the nftables policy table vanishes, the files
// stay. The node state file's dataplane marker is made to name another
// boot (the lab's nodes share one kernel, so the boot id cannot change).
func simulateReboot(t *testing.T, node string) {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", h.Netns, "nft", "delete", "table", "inet", "trellis-policy").CombinedOutput(); err != nil {
		t.Fatalf("%s: nft delete table: %v: %s", node, err, out)
	}
	l.MarkOtherBoot(t, node)
}

// TestE2EPolicyFirstPacketAfterReboot: a node "reboots" (its pods gone, the
// policy table gone, the node state file and conflist still on disk) while
// its agent cannot start. The kubelet re-creates the node's pods at once.
// A pod in a namespace whose policy admits only an allowed namespace must
// never answer a prober in another namespace: not while the agent is
// away, not while it comes back, not after. Once the agent is back, the
// pod runs and the allowed namespace reaches it (the positive control).
func TestE2EPolicyFirstPacketAfterReboot(t *testing.T) {
	requireAgent(t)
	if !l.AgentPod() {
		t.Fatal("this test holds the agent back by withdrawing its image on one node: it needs the DaemonSet install")
	}
	nodes := l.Nodes()
	if len(nodes) < 2 {
		t.Fatalf("needs two nodes, the lab has %v", nodes)
	}
	target, other := nodes[0], nodes[1]
	ctx := context.Background()
	srvNS := l.Namespace(t, "reboot-srv", nil)
	denied := l.Namespace(t, "reboot-denied", nil)
	allowed := l.Namespace(t, "reboot-allowed", map[string]string{"reboot-e2e": "allowed"})
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "only-allowed", Namespace: srvNS},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("reboot-e2e", "allowed")}}}}}}
	if _, err := l.CS.NetworkingV1().NetworkPolicies(srvNS).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	srv := framework.PodSpec{Name: "srv", Node: target}
	l.CreatePods(t, srvNS, []framework.PodSpec{srv}, 2*time.Minute)
	l.CreatePods(t, denied, []framework.PodSpec{{Name: "prober", Node: other}}, 2*time.Minute)
	l.CreatePods(t, allowed, []framework.PodSpec{{Name: "prober", Node: other}}, 2*time.Minute)
	deniedNetns, allowedNetns := netnsOf(t, denied+"/prober"), netnsOf(t, allowed+"/prober")
	ip := podIP(t, srvNS+"/srv")
	waitReach := func(what, netns, ip string, want bool, within time.Duration) {
		t.Helper()
		for start := time.Now(); reaches(netns, ip) != want; time.Sleep(100 * time.Millisecond) {
			if time.Since(start) > within {
				t.Fatalf("%s: reach %s = %v not observed within %s", what, ip, want, within)
			}
		}
	}
	waitReach("policy enforced before the reboot (allowed)", allowedNetns, ip, true, 30*time.Second)
	waitReach("policy enforced before the reboot (denied)", deniedNetns, ip, false, 30*time.Second)

	// Probe from the denied namespace, continuously, every address the
	// server pod has had, until the end.
	var mu sync.Mutex
	targets := map[string]bool{ip: true}
	var answered []string
	start := time.Now()
	stop, stopped := make(chan struct{}), make(chan struct{})
	var rounds int
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			var ips []string
			for a := range targets {
				ips = append(ips, a)
			}
			mu.Unlock()
			for _, a := range ips {
				if reaches(deniedNetns, a) {
					mu.Lock()
					answered = append(answered, fmt.Sprintf("%s at %s", a, time.Since(start).Round(time.Millisecond)))
					mu.Unlock()
				}
			}
			rounds++
			time.Sleep(50 * time.Millisecond)
		}
	}()
	track := func() *corev1.Pod {
		p, err := l.CS.CoreV1().Pods(srvNS).Get(ctx, "srv", metav1.GetOptions{})
		if err != nil {
			return nil
		}
		if p.Status.PodIP != "" {
			mu.Lock()
			targets[p.Status.PodIP] = true
			mu.Unlock()
		}
		return p
	}

	// The reboot: the agent cannot start, the node's pods are gone, the
	// table is gone, the files stay; the kubelet re-creates the pod.
	release := holdAgent(t, target)
	zero := int64(0)
	if err := l.CS.CoreV1().Pods(srvNS).Delete(ctx, "srv", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if _, err := l.CS.CoreV1().Pods(srvNS).Get(ctx, "srv", metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server pod not gone within 60s")
		}
	}
	// A reboot ends the pods before the tables vanish. The API object of a
	// force-deleted pod is gone before the kubelet has torn its sandbox
	// down, so wait for the node to drop the old address's host route.
	waitSandboxGone(t, target, ip)
	simulateReboot(t, target)
	if _, err := l.CS.CoreV1().Pods(srvNS).Create(ctx, framework.AgnhostPod(srvNS, srv), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	heldFor := 20 * time.Second
	wiredWhileAway := ""
	for until := time.Now().Add(heldFor); time.Now().Before(until); time.Sleep(250 * time.Millisecond) {
		if p := track(); p != nil && p.Status.PodIP != "" && wiredWhileAway == "" {
			wiredWhileAway = p.Status.PodIP
		}
	}
	if wiredWhileAway != "" {
		t.Errorf("the server pod was wired (%s) while the node had no policy table and no agent", wiredWhileAway)
	}

	// The agent comes back; the pod is wired once the base is in place.
	release()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		p := track()
		if p != nil && kube.PodReady(p) && p.Status.PodIP != "" {
			ip = p.Status.PodIP
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server pod not Ready within 3 minutes of the agent's return: %+v", p)
		}
		time.Sleep(250 * time.Millisecond)
	}
	waitReach("positive control after the agent's return", allowedNetns, ip, true, 60*time.Second)
	time.Sleep(5 * time.Second) // a last stretch of denied probes
	close(stop)
	<-stopped
	mu.Lock()
	defer mu.Unlock()
	if len(answered) > 0 {
		t.Fatalf("%d probes from the denied namespace were answered:\n%s", len(answered), strings.Join(answered, "\n"))
	}
	t.Logf("%d rounds of denied probes over %s (agent held back %s): none answered; the allowed namespace reaches the re-created pod",
		rounds, time.Since(start).Round(time.Second), heldFor)
}
