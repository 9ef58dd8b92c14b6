//go:build e2e

// Package framework is the Trellis end-to-end test harness: it brings a
// trellis-lab cluster up (or reuses one, TRELLIS_LAB_REUSE=1), creates
// objects through client-go, waits for them, probes connectivity from inside
// pods and compares truth tables in the style of the upstream NetworkPolicy
// e2e suite (expected vs observed, printed on failure).
package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Lab is a running lab as seen by tests.
type Lab struct {
	Bin    string
	Paths  state.Paths
	State  *state.State
	CS     *kubernetes.Clientset
	Config *rest.Config // the admin client's, for exec and port-forward
	Prober connectivity.Prober
	owned  bool // brought up by this harness: take it down at the end
}

// RepoRoot is the repository's top directory: the nearest directory at or
// above the working directory (go test runs a test in its package's) whose
// go.mod declares the main module. Found from the working directory rather
// than from the source file's path, which -trimpath (as make builds) removes.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if mod, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.HasPrefix(string(mod), "module github.com/trellisnet/trellis\n") {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// repoBin finds bin/trellis-lab in the repository when TRELLIS_LAB_BIN is
// not set.
func repoBin() string {
	repo := RepoRoot()
	if b := os.Getenv("TRELLIS_LAB_BIN"); b != "" {
		if !filepath.IsAbs(b) {
			b = filepath.Join(repo, b) // relative to the repository, not the test's directory
		}
		return b
	}
	return filepath.Join(repo, "bin", "trellis-lab")
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// Setup brings a lab up (TRELLIS_LAB_NODES/SUBNETS/ROUTING/INSTALL/ENCRYPTION,
// defaults 3/2/auto/daemonset/none; TRELLIS_LAB_BGP*: the ToR)
// or, with TRELLIS_LAB_REUSE=1, attaches to the running one.
func Setup(ctx context.Context) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the e2e tests need root (they run a lab of network namespaces)")
	}
	l := &Lab{Bin: repoBin(), Paths: state.NewPaths(os.Getenv("TRELLIS_LAB_NAME"))}
	if os.Getenv("TRELLIS_LAB_REUSE") != "1" {
		mode := os.Getenv("TRELLIS_LAB_ROUTING")
		if mode == "" {
			mode = "auto"
		}
		args := []string{"up", "--nodes", strconv.Itoa(envInt("TRELLIS_LAB_NODES", 3)),
			"--subnets", strconv.Itoa(envInt("TRELLIS_LAB_SUBNETS", 2)), "--routing-mode", mode}
		// TRELLIS_LAB_INSTALL: daemonset (default), helm or process;
		// TRELLIS_LAB_IMAGE_TAR: the image (default bin/image/trellis-image.tar);
		// TRELLIS_LAB_MANIFEST: the manifest (default deploy/trellis.yaml).
		if v := os.Getenv("TRELLIS_LAB_INSTALL"); v != "" {
			args = append(args, "--install", v)
		}
		if v := os.Getenv("TRELLIS_LAB_IMAGE_TAR"); v != "" {
			args = append(args, "--image-tar", v)
		}
		if v := os.Getenv("TRELLIS_LAB_MANIFEST"); v != "" {
			args = append(args, "--manifest", v)
		}
		// TRELLIS_LAB_ENCRYPTION: none (default) or wireguard.
		if v := os.Getenv("TRELLIS_LAB_ENCRYPTION"); v != "" {
			args = append(args, "--encryption", v)
		}
		// TRELLIS_LAB_BGP=1: the ToR (--bgp; TRELLIS_LAB_ROUTING=bgp implies
		// it), TRELLIS_LAB_BGP_PEERING: None, FullMesh or RouteReflector,
		// TRELLIS_LAB_BGP_RESTART_TIME: the nodes' graceful-restart time (s).
		if os.Getenv("TRELLIS_LAB_BGP") == "1" {
			args = append(args, "--bgp")
		}
		if v := os.Getenv("TRELLIS_LAB_BGP_PEERING"); v != "" {
			args = append(args, "--bgp-peering", v)
		}
		if v := os.Getenv("TRELLIS_LAB_BGP_RESTART_TIME"); v != "" {
			args = append(args, "--bgp-restart-time", v)
		}
		// TRELLIS_LAB_IP_FAMILY: ipv4 (default), ipv6 or dual.
		if v := os.Getenv("TRELLIS_LAB_IP_FAMILY"); v != "" {
			args = append(args, "--ip-family", v)
		}
		// TRELLIS_LAB_CLUSTER_CIDR, TRELLIS_LAB_NODE_CIDR_MASK: the cluster's
		// pod range and each real node's pod CIDR size (test/e2e/scale
		// widens them for its API-only Nodes).
		if v := os.Getenv("TRELLIS_LAB_CLUSTER_CIDR"); v != "" {
			args = append(args, "--cluster-cidr", v)
		}
		if v := os.Getenv("TRELLIS_LAB_NODE_CIDR_MASK"); v != "" {
			args = append(args, "--node-cidr-mask", v)
		}
		// TRELLIS_LAB_CNI: trellis (default) or kube-router (test/e2e/peer).
		if v := os.Getenv("TRELLIS_LAB_CNI"); v != "" {
			args = append(args, "--cni", v)
		}
		cmd := exec.CommandContext(ctx, l.Bin, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("trellis-lab up: %w", err)
		}
		fmt.Printf("framework: lab up in %s\n", time.Since(start).Round(time.Millisecond))
		l.owned = true
	}
	st, err := state.LoadState(l.Paths)
	if err != nil {
		return nil, fmt.Errorf("no lab to use (TRELLIS_LAB_REUSE=1 needs a running lab): %w", err)
	}
	l.State = st
	cs, cfg, err := kube.Client(l.Paths.AdminKubeconfig())
	if err != nil {
		return nil, err
	}
	l.CS, l.Config = cs, cfg
	l.Prober = probe.Netns{CS: cs, Timeout: 2 * time.Second}
	return l, nil
}

// Teardown removes the lab if this harness brought it up (keep it with
// TRELLIS_LAB_KEEP=1).
func (l *Lab) Teardown() error {
	if l == nil || !l.owned || os.Getenv("TRELLIS_LAB_KEEP") == "1" {
		return nil
	}
	cmd := exec.Command(l.Bin, "down")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

// HasAgent reports whether the lab's nodes run the Trellis agent (as a
// DaemonSet pod or as a process).
func (l *Lab) HasAgent() bool {
	if l.State.Install.AgentPod() {
		return true
	}
	return l.State.Binaries["trellis-agent"] != "" && l.State.AgentError == ""
}

// Nodes returns the lab's node names in order.
func (l *Lab) Nodes() []string {
	var out []string
	for _, n := range l.State.Topology.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// SameSubnet reports whether two nodes share an underlay subnet.
func (l *Lab) SameSubnet(a, b string) bool {
	na, _ := l.State.Topology.Node(a)
	nb, _ := l.State.Topology.Node(b)
	return na.Subnet == nb.Subnet
}

// Namespace creates a uniquely named namespace, deleted when t ends.
func (l *Lab) Namespace(t testing.TB, base string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: base + "-", Labels: labels}}
	got, err := l.CS.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = l.CS.CoreV1().Namespaces().Delete(context.Background(), got.Name, metav1.DeleteOptions{})
	})
	return got.Name
}

// PodSpec describes an agnhost netexec pod: HTTP (TCP) on 80, UDP on 81.
type PodSpec struct {
	Name   string
	Node   string // pin to a node; "" lets kube-scheduler choose
	Labels map[string]string
}

// AgnhostPod returns the pod object for s in namespace ns.
func AgnhostPod(ns string, s PodSpec) *corev1.Pod {
	labels := map[string]string{"pod": s.Name}
	for k, v := range s.Labels {
		labels[k] = v
	}
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      s.Node,
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name:            "agnhost",
				Image:           images.AgnhostImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args:            []string{"netexec", "--http-port=80", "--udp-port=81"},
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
					{Name: "udp", ContainerPort: 81, Protocol: corev1.ProtocolUDP},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: portOf(80)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// CreatePods creates the pods and waits until all are Ready.
func (l *Lab) CreatePods(t testing.TB, ns string, specs []PodSpec, timeout time.Duration) []string {
	t.Helper()
	ctx := context.Background()
	var names []string
	for _, s := range specs {
		if _, err := l.CS.CoreV1().Pods(ns).Create(ctx, AgnhostPod(ns, s), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating pod %s/%s: %v", ns, s.Name, err)
		}
		names = append(names, ns+"/"+s.Name)
	}
	if err := l.WaitPodsReady(ctx, ns, len(specs), timeout); err != nil {
		t.Fatal(err)
	}
	return names
}

// PodPerNode puts one agnhost pod on each given node (named p<i>-<node>)
// in a new namespace named after base, waits up to 2 minutes until all are
// Ready and returns their NS/POD refs.
func (l *Lab) PodPerNode(t testing.TB, base string, nodes []string) []string {
	t.Helper()
	ns := l.Namespace(t, base, nil)
	var specs []PodSpec
	for i, n := range nodes {
		specs = append(specs, PodSpec{Name: fmt.Sprintf("p%d-%s", i, n), Node: n})
	}
	return l.CreatePods(t, ns, specs, 2*time.Minute)
}

// NodeHost is the lab's host of node name (its namespace and addresses).
func (l *Lab) NodeHost(t testing.TB, name string) topology.Host {
	t.Helper()
	h, err := l.State.Topology.Node(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// NetnsPath is the path of the named network namespace.
func NetnsPath(name string) string { return filepath.Join("/var/run/netns", name) }

// WaitPodsReady waits until n pods in ns are Ready; on timeout the error
// names the pods that are not, with their last sandbox error if any.
func (l *Lab) WaitPodsReady(ctx context.Context, ns string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		list, err := l.CS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		ready := 0
		var notReady []string
		if err == nil {
			for i := range list.Items {
				if kube.PodReady(&list.Items[i]) {
					ready++
				} else {
					notReady = append(notReady, list.Items[i].Name)
				}
			}
		}
		if err == nil && ready >= n {
			return nil
		}
		if time.Now().After(deadline) {
			evs, _ := l.CS.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
			msg := ""
			if evs != nil && len(evs.Items) > 0 {
				last := evs.Items[len(evs.Items)-1]
				msg = fmt.Sprintf("; last warning: %s %s: %s", last.InvolvedObject.Name, last.Reason, last.Message)
			}
			return fmt.Errorf("%d of %d pods Ready in %s after %s (not ready: %v)%s", ready, n, ns, timeout, notReady, msg)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// NodeOf returns the node a pod (NS/POD) runs on.
func (l *Lab) NodeOf(t testing.TB, ref string) string {
	t.Helper()
	ns, name, err := connectivity.SplitPodRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.CS.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Spec.NodeName
}

// ExpectMatrix probes every pair of pods and fails t with the expected and
// observed truth tables when they differ. A wrong cell is re-probed a few
// times before it counts (first packets may race route programming).
func (l *Lab) ExpectMatrix(t testing.TB, pods []string, port int, proto string, expected *connectivity.Matrix) {
	t.Helper()
	if !slices.Equal(pods, expected.Pods) {
		t.Fatalf("ExpectMatrix: pods %v are not the expected matrix's %v", pods, expected.Pods)
	}
	observed, err := connectivity.Expect(context.Background(), l.Prober, expected, port, proto, 3)
	if err != nil {
		t.Fatalf("probing: %v", err)
	}
	if expected.Diff(observed) == 0 {
		t.Logf("%d/%s truth table as expected over %d pods", port, proto, len(pods))
		return
	}
	t.Errorf("%d/%s connectivity differs from the expectation:\n%s", port, proto, connectivity.Report(expected, observed))
}

// Main is a TestMain body: it sets *l up (Setup), runs the tests, tears the
// lab down (Teardown) and exits with the tests' status.
func Main(m *testing.M, l **Lab, setupTimeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	lab, err := Setup(ctx)
	cancel()
	*l = lab
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		_ = lab.Teardown()
		os.Exit(1)
	}
	code := m.Run()
	if err := lab.Teardown(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e teardown:", err)
		code = 1
	}
	os.Exit(code)
}
