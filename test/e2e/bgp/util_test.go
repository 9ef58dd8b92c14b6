//go:build e2e

package bgp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	bgpv1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/lab/tor"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// requireBGPLab fails (never skips) unless the lab runs the agent in
// routing mode bgp with the ToR, over 3+ nodes and 2+ subnets.
func requireBGPLab(t *testing.T) {
	t.Helper()
	if !l.HasAgent() {
		t.Fatalf("the lab runs without the Trellis agent (%s)", l.State.AgentError)
	}
	o := l.State.Topology.Options
	if !o.BGP || o.RoutingMode != topology.RoutingModeBGP {
		t.Fatalf("the lab runs in routing mode %q, BGP %v: bring it up with --routing-mode bgp (TRELLIS_LAB_ROUTING=bgp)", o.RoutingMode, o.BGP)
	}
	if len(l.Nodes()) < 3 || len(l.State.Topology.Subnets) < 2 {
		t.Fatalf("needs 3+ nodes over 2+ subnets, the lab has %d nodes over %d subnets", len(l.Nodes()), len(l.State.Topology.Subnets))
	}
}

// restartTime is the graceful-restart time the lab's nodes announce.
func restartTime() time.Duration {
	if s := l.State.Topology.Options.BGPRestartTime; s > 0 {
		return time.Duration(s) * time.Second
	}
	return 120 * time.Second
}

func nodeHost(t *testing.T, node string) topology.Host {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// otherSubnetNode returns a node on another subnet than node's.
func otherSubnetNode(t *testing.T, node string) string {
	t.Helper()
	for _, n := range l.Nodes() {
		if !l.SameSubnet(node, n) {
			return n
		}
	}
	t.Fatalf("no node on another subnet than %s", node)
	return ""
}

// inNetns runs argv in the named lab network namespace.
func inNetns(netns string, argv ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns, "--"}, argv...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", netns, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// inNode runs argv in node's network namespace.
func inNode(t *testing.T, node string, argv ...string) string {
	t.Helper()
	out, err := inNetns(nodeHost(t, node).Netns, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// podCIDR is node's IPv4 pod CIDR.
func podCIDR(t *testing.T, node string) netip.Prefix {
	t.Helper()
	n, err := l.CS.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
			return p
		}
	}
	t.Fatalf("node %s has no IPv4 pod CIDR", node)
	return netip.Prefix{}
}

// birdc runs birdc against the lab's ToR.
func birdc(t *testing.T, args ...string) string {
	t.Helper()
	out, err := tor.Birdc(context.Background(), l.Paths, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// torBest maps every prefix in the ToR's table to its best next hops.
func torBest(t *testing.T) map[netip.Prefix][]netip.Addr {
	t.Helper()
	return tor.BestNextHops(tor.ParseRoutes(birdc(t, "show", "route")))
}

// torHas reports whether the ToR's best route for p goes to via.
func torHas(t *testing.T, p netip.Prefix, via netip.Addr) bool {
	t.Helper()
	for _, a := range torBest(t)[p] {
		if a == via {
			return true
		}
	}
	return false
}

// routerRoute is the router's kernel route for p ("" without one).
func routerRoute(t *testing.T, p netip.Prefix) string {
	t.Helper()
	out, err := inNetns(l.State.Topology.RouterNetns, "ip", "-4", "route", "show", "exact", p.String())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// torSession is the name of the protocol BIRD spawned for the node at addr
// on its subnet's plain (not MD5) range, and its `show protocols all` block.
func torSession(t *testing.T, addr netip.Addr) (name, block string) {
	t.Helper()
	out := birdc(t, "show", "protocols", "all")
	var cur string
	var b strings.Builder
	blocks := map[string]string{}
	flush := func() {
		if cur != "" {
			blocks[cur] = b.String()
		}
		b.Reset()
	}
	for _, line := range strings.Split(out, "\n") {
		if line != "" && line[0] != ' ' && line[0] != '\t' {
			flush()
			cur = strings.Fields(line)[0]
		}
		b.WriteString(line + "\n")
	}
	flush()
	for n, blk := range blocks {
		if strings.Contains(n, "_md5") || !strings.Contains(blk, "Neighbor address: "+addr.String()+"\n") {
			continue
		}
		if _, ok := tor.NodeSessions([]tor.Protocol{{Name: n, Proto: "BGP"}})[n]; ok {
			return n, blk
		}
	}
	return "", ""
}

// established reports whether the ToR's session with the node at addr is
// established.
func established(t *testing.T, addr netip.Addr) bool {
	t.Helper()
	_, blk := torSession(t, addr)
	for _, line := range strings.Split(blk, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "BGP" && f[1] == "state:" {
			return f[2] == "Established"
		}
	}
	return false
}

// waitToR waits until the ToR's best route for every node's pod CIDR goes
// to that node.
func waitToR(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	return eventually(t, within, "every node's pod CIDR on the ToR via that node", func() bool {
		best := torBest(t)
		for _, n := range l.Nodes() {
			ok := false
			for _, a := range best[podCIDR(t, n)] {
				ok = ok || a == nodeHost(t, n).Addr
			}
			if !ok {
				return false
			}
		}
		return true
	})
}

// eventually polls cond every 100 ms until it holds or within has passed
// (then it fails t); it returns how long it took.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// figure logs a measured figure with a prefix the lane logs can be searched for.
func figure(t *testing.T, format string, a ...any) {
	t.Helper()
	t.Logf("FIGURE "+format, a...)
}

// torLogSize is the ToR log's current length, to read what comes after.
func torLogSize(t *testing.T) int64 {
	t.Helper()
	fi, err := os.Stat(l.Paths.LogFile(tor.ProcessName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// torLogSince is the ToR's log from offset on.
func torLogSince(t *testing.T, offset int64) string {
	t.Helper()
	data, err := os.ReadFile(l.Paths.LogFile(tor.ProcessName))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) < offset {
		return string(data)
	}
	return string(data[offset:])
}

// extNetns is the external host's network namespace path.
func extNetns() string { return "/run/netns/" + l.State.Topology.External.Netns }

// httpGet asks an agnhost netexec server at addr (host:port) for path from
// the network namespace at nsPath and returns the body.
func httpGet(nsPath, addr, path string) (string, error) {
	conn, err := topology.DialInNetns(nsPath, "tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	status, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.Contains(status, " 200 ") {
		return "", fmt.Errorf("GET %s%s: %s", addr, path, strings.TrimSpace(status))
	}
	for { // headers
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(line) == "" {
			break
		}
	}
	body, err := io.ReadAll(r)
	return strings.TrimSpace(string(body)), err
}

// newPods creates one agnhost pod per node (pods[i] on nodes[i]).
func newPods(t *testing.T, base string) (nsName string, pods []string) {
	t.Helper()
	nsName = l.Namespace(t, base, nil)
	var specs []framework.PodSpec
	for i, n := range l.Nodes() {
		specs = append(specs, framework.PodSpec{Name: fmt.Sprintf("p%d-%s", i, n), Node: n, Labels: map[string]string{"app": base}})
	}
	return nsName, l.CreatePods(t, nsName, specs, 2*time.Minute)
}

// The BGP API through the dynamic client.
var (
	configurations = bgpv1.SchemeGroupVersion.WithResource("bgpconfigurations")
	peers          = bgpv1.SchemeGroupVersion.WithResource("bgppeers")
	nodeStatuses   = bgpv1.SchemeGroupVersion.WithResource("bgpnodestatuses")
)

func dyn(t *testing.T) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(l.Config)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mergePatch merge-patches the cluster-scoped object name of resource r.
func mergePatch(t *testing.T, r schema.GroupVersionResource, name string, patch map[string]any) {
	t.Helper()
	data, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn(t).Resource(r).Patch(context.Background(), name, types.MergePatchType, data, metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching %s %s: %v", r.Resource, name, err)
	}
}

// createObject creates a typed BGP object (deleted when t ends).
func createObject(t *testing.T, r schema.GroupVersionResource, kind string, obj runtime.Object) {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(bgpv1.SchemeGroupVersion.WithKind(kind))
	if _, err := dyn(t).Resource(r).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating %s %s: %v", kind, u.GetName(), err)
	}
	t.Cleanup(func() {
		_ = dyn(t).Resource(r).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{})
	})
}

// nodeStatus is node's BGPNodeStatus (nil while there is none).
func nodeStatus(t *testing.T, node string) *bgpv1.BGPNodeStatus {
	t.Helper()
	u, err := dyn(t).Resource(nodeStatuses).Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	var s bgpv1.BGPNodeStatus
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &s); err != nil {
		t.Fatalf("BGPNodeStatus %s: %v", node, err)
	}
	return &s
}

// peerStatus is the status of node's session named peer ("" state without
// one).
func peerStatus(t *testing.T, node, peer string) bgpv1.PeerStatus {
	t.Helper()
	if s := nodeStatus(t, node); s != nil {
		for _, p := range s.Status.Peers {
			if p.Peer == peer {
				return p
			}
		}
	}
	return bgpv1.PeerStatus{}
}

// sockAddr joins an address and a port.
func sockAddr(a netip.Addr, port int) string {
	return net.JoinHostPort(a.String(), fmt.Sprint(port))
}

// startExternalServer listens on addr:port (TCP) in the external host and
// accepts connections until t ends; the returned function counts them.
func startExternalServer(t *testing.T, addr netip.Addr, port int) func() int {
	t.Helper()
	var ln net.Listener
	framework.InNetns(t, extNetns(), func() error {
		var err error
		ln, err = net.Listen("tcp4", sockAddr(addr, port))
		return err
	})
	count := make(chan int, 1)
	count <- 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := <-count
			count <- n + 1
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return func() int { n := <-count; count <- n; return n }
}

// dialFromPod opens (and closes) a TCP connection from pod to addr.
func dialFromPod(t *testing.T, pod, addr string) error {
	t.Helper()
	c, err := topology.DialInNetns(l.PodNetns(t, pod), "tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// torLogTime is the time on the first line of the ToR's log holding
// marker (BIRD writes "2006-01-02 15:04:05.000 <LEVEL> ..." in local time).
func torLogTime(log, marker string) (time.Time, bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, marker) || len(line) < 23 {
			continue
		}
		ts, err := time.ParseInLocation("2006-01-02 15:04:05.000", line[:23], time.Local)
		return ts, err == nil
	}
	return time.Time{}, false
}
