//go:build e2e

package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// hammerResult is what probing one new pod address from its first moment
// found.
type hammerResult struct {
	ns      string // namespace class: "isolated" or "open"
	ip      string
	node    string
	reached bool
	after   time.Duration // first reach, from the host route appearing
}

// routeWatch reports every new pod host route (a /32 on a trl device) on
// node, with the device group the plugin gave it, from the moment the
// plugin installs it (CNI ADD), long before the pod's status has its IP.
func routeWatch(ctx context.Context, t *testing.T, node string, found func(ip string, group uint32)) {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	nsh, err := vns.GetFromPath(filepath.Join("/var/run/netns", h.Netns))
	if err != nil {
		t.Fatalf("netns of %s: %v", node, err)
	}
	nh, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan netlink.RouteUpdate, 256)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &nsh}); err != nil {
		t.Fatalf("route subscribe on %s: %v", node, err)
	}
	go func() {
		defer nsh.Close()
		defer nh.Close()
		for {
			select {
			case <-ctx.Done():
				close(done)
				return
			case u, ok := <-ch:
				if !ok {
					return
				}
				if u.Type != unix.RTM_NEWROUTE || u.Dst == nil || u.Dst.IP.To4() == nil {
					continue
				}
				if ones, _ := u.Dst.Mask.Size(); ones != 32 {
					continue
				}
				link, err := nh.LinkByIndex(u.LinkIndex)
				if err != nil || !podlink.IsHostName(link.Attrs().Name) {
					continue
				}
				found(u.Dst.IP.String(), uint32(link.Attrs().Group))
			}
		}
	}()
}

// hammer connects to ip:80 from the prober's netns every 50ms for d. A
// connection or a refusal (RST from a pod whose server is not up yet) means
// the packet reached the pod.
func hammer(proberNetns, ip string, d time.Duration) (bool, time.Duration) {
	start := time.Now()
	for time.Since(start) < d {
		c, err := topology.DialInNetns(proberNetns, "tcp4", net.JoinHostPort(ip, "80"), 250*time.Millisecond)
		if err == nil {
			c.Close()
			return true, time.Since(start)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return true, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false, 0
}

// TestE2EPolicyChurnFirstPacket: pods are created and deleted continuously
// in a namespace whose policy denies all ingress, and in one without
// policies, while a prober pod hammers every new pod address from the
// moment the plugin installs its host route (CNI ADD). No packet may ever
// reach an isolated pod (first-packet isolation), including across a
// kill -9 of an agent; every open pod must be reachable at once, without
// waiting for the agent (the pending state is not a black hole).
func TestE2EPolicyChurnFirstPacket(t *testing.T) {
	requireAgent(t)
	nodes := l.Nodes()
	iso := l.Namespace(t, "churn-iso", nil)
	open := l.Namespace(t, "churn-open", nil)
	probeNS := l.Namespace(t, "churn-prober", nil)
	l.CreatePods(t, probeNS, []framework.PodSpec{{Name: "prober", Node: nodes[0]}}, 2*time.Minute)
	proberPod, err := l.CS.CoreV1().Pods(probeNS).Get(context.Background(), "prober", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	proberNetns, err := probe.PodNetns(proberPod)
	if err != nil {
		t.Fatal(err)
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-ingress", Namespace: iso},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly}}
	if _, err := l.CS.NetworkingV1().NetworkPolicies(iso).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the policy is in force before the first isolated pod exists

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	classes := map[uint32]string{podlink.GroupForNamespace(iso): "isolated", podlink.GroupForNamespace(open): "open"}
	var mu sync.Mutex
	var results []hammerResult
	var wg sync.WaitGroup
	for _, n := range nodes {
		routeWatch(ctx, t, n, func(ip string, group uint32) {
			class, ok := classes[group]
			if !ok {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				reached, after := hammer(proberNetns, ip, 4*time.Second)
				mu.Lock()
				results = append(results, hammerResult{ns: class, ip: ip, node: n, reached: reached, after: after})
				mu.Unlock()
			}()
		})
	}

	const rounds, perRound = 4, 6
	for r := 0; r < rounds; r++ {
		if r == rounds/2 {
			// kill -9 of an agent in the middle of the churn.
			out, err := l.KillAgentCmd(nodes[1]).CombinedOutput()
			if err != nil {
				t.Fatalf("restart-agent %s: %v\n%s", nodes[1], err, out)
			}
		}
		for _, nsName := range []string{iso, open} {
			for i := 0; i < perRound; i++ {
				pod := framework.AgnhostPod(nsName, framework.PodSpec{Name: fmt.Sprintf("r%d-p%d", r, i), Node: nodes[i%len(nodes)]})
				if _, err := l.CS.CoreV1().Pods(nsName).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, nsName := range []string{iso, open} {
			if err := l.WaitPodsReady(context.Background(), nsName, perRound, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		for _, nsName := range []string{iso, open} {
			if err := l.CS.CoreV1().Pods(nsName).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()

	var violations []string
	var openTimes []time.Duration
	seen := map[string]int{}
	for _, r := range results {
		seen[r.ns]++
		switch {
		case r.ns == "isolated" && r.reached:
			violations = append(violations, fmt.Sprintf("isolated pod %s on %s reached %s after its route appeared", r.ip, r.node, r.after))
		case r.ns == "open" && !r.reached:
			violations = append(violations, fmt.Sprintf("open pod %s on %s never reached within 4s", r.ip, r.node))
		case r.ns == "open":
			openTimes = append(openTimes, r.after)
		}
	}
	if seen["isolated"] < rounds*perRound || seen["open"] < rounds*perRound {
		t.Fatalf("watched %d isolated and %d open pod routes, want %d each (route watch broken?)", seen["isolated"], seen["open"], rounds*perRound)
	}
	if len(violations) > 0 {
		t.Fatalf("%d violations:\n%s", len(violations), strings.Join(violations, "\n"))
	}
	sort.Slice(openTimes, func(i, j int) bool { return openTimes[i] < openTimes[j] })
	// The old design dropped every pending pod until the agent had seen its
	// status (seconds after CNI ADD in the lab); open pods must not wait.
	if p50 := openTimes[len(openTimes)/2]; p50 > time.Second {
		t.Errorf("open pods reached only after p50 %s from CNI ADD: new pods wait for the agent", p50)
	}
	t.Logf("%d isolated pods never reached (hammered 4s each from CNI ADD, agent on %s killed mid-way); %d open pods reached after p50 %s, max %s from CNI ADD",
		seen["isolated"], nodes[1], len(openTimes), openTimes[len(openTimes)/2].Round(time.Millisecond), openTimes[len(openTimes)-1].Round(time.Millisecond))
}
