//go:build e2e

// Package encryption holds the end-to-end tests of Trellis's WireGuard
// encryption on one lab brought up with `trellis-lab up --encryption
// wireguard` (3 nodes over 2 subnets, routing mode auto): captures on the
// lab's switch prove that no pod packet crossing nodes is plaintext while
// WireGuard datagrams are, in every routing mode, through faults (the
// WireGuard port blocked, a node's key withdrawn, agent kill -9, a node
// starting afresh) and a live key rotation; a last capture with encryption
// turned off finds the payload (the negative control).
package encryption

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

func TestMain(m *testing.M) {
	// The suite brings its own lab up with encryption on; a reused lab
	// (TRELLIS_LAB_REUSE=1) must have been brought up so (checked below).
	if os.Getenv("TRELLIS_LAB_ENCRYPTION") == "" {
		_ = os.Setenv("TRELLIS_LAB_ENCRYPTION", string(config.EncryptionWireGuard))
	}
	framework.Main(m, &l, 15*time.Minute)
}

// wgPort and wgDevice are the agent's defaults, which the lab keeps.
const (
	wgPort   = config.DefaultWireGuardPort
	wgDevice = config.DefaultWireGuardDevice
)

// requireEncryptedLab fails (never skips) unless the lab runs the agent with
// encryption on, over 3+ nodes and 2+ subnets.
func requireEncryptedLab(t *testing.T) {
	t.Helper()
	if !l.HasAgent() {
		t.Fatalf("the lab runs without the Trellis agent (%s)", l.State.AgentError)
	}
	if e := l.State.Topology.Options.EncryptionOrDefault(); e != string(config.EncryptionWireGuard) {
		t.Fatalf("the lab runs with encryption %q: bring it up with --encryption wireguard (TRELLIS_LAB_ENCRYPTION)", e)
	}
	if len(l.Nodes()) < 3 || len(l.State.Topology.Subnets) < 2 {
		t.Fatalf("needs 3+ nodes over 2+ subnets, the lab has %d nodes over %d subnets", len(l.Nodes()), len(l.State.Topology.Subnets))
	}
}

// world is one agnhost pod per node (pods[i] on nodes[i]), in node order:
// on the lab's default layout node1 and node3 share subnet 1, node2 is on
// subnet 2.
type world struct {
	ns    string
	nodes []string
	pods  []string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{ns: l.Namespace(t, "wg", nil), nodes: l.Nodes()}
	var specs []framework.PodSpec
	for i, n := range w.nodes {
		specs = append(specs, framework.PodSpec{Name: fmt.Sprintf("p%d-%s", i, n), Node: n})
	}
	w.pods = l.CreatePods(t, w.ns, specs, 2*time.Minute)
	return w
}

// otherSubnet returns the index of the first node on another subnet than
// node i's (the lab's layout always has one).
func (w *world) otherSubnet(t *testing.T, i int) int {
	t.Helper()
	for j, n := range w.nodes {
		if !l.SameSubnet(w.nodes[i], n) {
			return j
		}
	}
	t.Fatalf("no node on another subnet than %s", w.nodes[i])
	return -1
}

// crossPairs are every ordered pair of pods on different nodes.
func (w *world) crossPairs() [][2]int {
	var out [][2]int
	for i := range w.pods {
		for j := range w.pods {
			if i != j {
				out = append(out, [2]int{i, j})
			}
		}
	}
	return out
}

func (w *world) ip(t *testing.T, i int) string {
	t.Helper()
	ip := l.Pod(t, w.pods[i]).Status.PodIP
	if ip == "" {
		t.Fatalf("pod %s has no IP", w.pods[i])
	}
	return ip
}

func (w *world) netns(t *testing.T, i int) string { t.Helper(); return l.PodNetns(t, w.pods[i]) }

// canary returns a payload no other traffic carries: a capture that finds
// it found plaintext of this test.
func canary(t *testing.T, what string) []byte {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return []byte(fmt.Sprintf("TRELLIS-PLAINTEXT-CANARY-%s-%s", what, hex.EncodeToString(b)))
}

func nodeHost(t *testing.T, node string) topology.Host {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// inNode runs a command in node's network namespace and returns its output.
func inNode(t *testing.T, node string, argv ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + nodeHost(t, node).Netns, "--"}, argv...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", node, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// nftBlock loads an nftables table of the test's own (ruleset: its chains
// and rules, in nft syntax) into node's namespace; the returned function
// (also run at cleanup) deletes it. It returns the table's listing with
// counters through list.
func nftBlock(t *testing.T, node, table, ruleset string) (unblock func(), list func() string) {
	t.Helper()
	script := fmt.Sprintf("table inet %s\ndelete table inet %s\ntable inet %s {\n%s\n}\n", table, table, table, ruleset)
	cmd := exec.Command("nsenter", "--net=/run/netns/"+nodeHost(t, node).Netns, "--", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: nft -f: %v: %s\n%s", node, err, out, script)
	}
	done := false
	unblock = func() {
		if done {
			return
		}
		done = true
		if _, err := inNode(t, node, "nft", "delete", "table", "inet", table); err != nil {
			t.Errorf("removing the test's table: %v", err)
		}
	}
	t.Cleanup(unblock)
	list = func() string {
		out, err := inNode(t, node, "nft", "list", "table", "inet", table)
		if err != nil {
			return err.Error()
		}
		return out
	}
	return unblock, list
}

// hasDevice reports whether node has the WireGuard device.
func hasDevice(t *testing.T, node string) bool {
	t.Helper()
	_, err := inNode(t, node, "ip", "link", "show", "dev", wgDevice)
	return err == nil
}

// routeDev returns the device node routes dst through ("" without a route).
func routeDev(t *testing.T, node, dst string) string {
	t.Helper()
	out, err := inNode(t, node, "ip", "-4", "route", "show", "exact", dst)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "dev" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

func getNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := l.CS.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// annotate sets (value != nil) or removes (nil) a Node annotation with the
// admin's credentials.
func annotate(t *testing.T, node, key string, value *string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{key: value}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.CS.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("annotating %s: %v", node, err)
	}
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
