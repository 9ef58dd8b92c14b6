package compare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/lab"
	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/state"
)

// Options configures a comparison run.
type Options struct {
	LabBin string // trellis-lab
	CtlBin string // trellisctl
	E2EBin string // e2e.test
	// Labs maps each CNI to compare to its lab's name, in run order.
	Labs []LabSpec
	Skip map[string]bool // netpol, connectivity, bench, latency, memory
	// Reuse measures labs that are already running (named as in Labs)
	// and leaves them running, for trying the tool; a report of a real
	// comparison brings both labs up itself.
	Reuse  bool
	LogDir string
	Out    io.Writer

	NetpolFocus, NetpolSkip string
	NetpolTimeout           time.Duration
	CtlTimeout              time.Duration
	Latency                 LatencyOptions // Probe is set per lab
}

// LabSpec is one lab of the comparison.
type LabSpec struct {
	CNI     string // lab.CNITrellis or lab.CNIKubeRouter
	Name    string // lab name (≤ 8 characters)
	Version string
	UpArgs  []string // extra `trellis-lab up` arguments
}

func (o Options) logf(format string, args ...any) {
	if o.Out != nil {
		fmt.Fprintf(o.Out, "compare: "+format+"\n", args...)
	}
}

// Run measures every lab in turn (one lab at a time: the machine has two
// cores) and returns one result per lab.
func Run(ctx context.Context, o Options) []Result {
	var out []Result
	for _, l := range o.Labs {
		out = append(out, o.runLab(ctx, l))
	}
	return out
}

// runCmd runs argv with output to log (and returns stdout when capture).
func runCmd(ctx context.Context, timeout time.Duration, log string, argv ...string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	f, err := os.Create(log)
	if err != nil {
		return nil, -1, fmt.Errorf("creating %s: %w", log, err)
	}
	defer f.Close()
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = io.MultiWriter(&stdout, f)
	cmd.Stderr = f
	// On timeout, interrupt first: ginkgo and trellisctl then clean up and
	// write their reports; a kill follows if they do not exit.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = time.Minute
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
		err = nil
	case err != nil:
		return stdout.Bytes(), -1, err
	}
	if ctx.Err() != nil {
		return stdout.Bytes(), code, fmt.Errorf("timed out after %s", timeout)
	}
	return stdout.Bytes(), code, nil
}

func (o Options) runLab(ctx context.Context, l LabSpec) Result {
	r := Result{CNI: l.CNI, Version: l.Version}
	name := func(s string) string { return filepath.Join(o.LogDir, l.CNI+"-"+s) }
	if !o.Reuse {
		o.logf("%s: bringing the lab %q up", l.CNI, l.Name)
		start := time.Now()
		up := append([]string{o.LabBin, "--name", l.Name, "up", "--nodes", "3", "--subnets", "2"}, l.UpArgs...)
		_, code, err := runCmd(ctx, 20*time.Minute, name("up.log"), up...)
		defer func() {
			o.logf("%s: taking the lab down", l.CNI)
			_, _, _ = runCmd(context.Background(), 5*time.Minute, name("down.log"), o.LabBin, "--name", l.Name, "down")
		}()
		if err == nil && code != 0 {
			err = fmt.Errorf("trellis-lab up exited %d (log: %s)", code, name("up.log"))
		}
		if err != nil {
			r.LabError = err.Error()
			o.logf("%s: %v", l.CNI, err)
			return r
		}
		r.LabUp = time.Since(start)
		o.logf("%s: lab up in %s", l.CNI, r.LabUp.Round(time.Second))
	}
	paths := state.NewPaths(l.Name)
	kubeconfig := paths.AdminKubeconfig()

	const leftOut = "left out of this run (-skip)"
	r.Netpol, r.Connectivity, r.Bench = Suite{Unavailable: leftOut}, Suite{Unavailable: leftOut}, Bench{Unavailable: leftOut}
	r.OneChange, r.Burst, r.MemoryError = Latency{Error: leftOut}, Latency{Error: leftOut}, leftOut
	if !o.Skip["netpol"] {
		r.Netpol = o.netpol(ctx, kubeconfig, name("netpol"))
		o.logf("%s: NetworkPolicy e2e: %s", l.CNI, r.Netpol.cell())
	}
	if !o.Skip["connectivity"] {
		r.Connectivity = o.connectivity(ctx, kubeconfig, name("connectivity.log"))
		o.logf("%s: connectivity test: %s", l.CNI, r.Connectivity.cell())
	}
	if !o.Skip["bench"] {
		r.Bench = o.bench(ctx, kubeconfig, name("bench.log"))
		o.logf("%s: bench: %+v", l.CNI, r.Bench)
	}
	if !o.Skip["latency"] {
		r.OneChange, r.Burst = o.latency(ctx, paths)
		o.logf("%s: latency: one change %s; 100 policies %s", l.CNI, r.OneChange.cell(), r.Burst.cell())
	}
	if !o.Skip["memory"] {
		r.MemoryError = ""
		mem, err := lab.AgentMemory(paths)
		if err != nil {
			r.MemoryError = err.Error()
		}
		for _, m := range mem {
			r.Memory = append(r.Memory, NodeMem(m))
		}
		o.logf("%s: agent memory: %+v", l.CNI, r.Memory)
	}
	return r
}

func (o Options) netpol(ctx context.Context, kubeconfig, dir string) Suite {
	if o.E2EBin == "" {
		return Suite{Unavailable: "no e2e.test"}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Suite{Error: err.Error()}
	}
	start := time.Now()
	junit := filepath.Join(dir, "junit.xml")
	_, code, err := runCmd(ctx, o.NetpolTimeout, filepath.Join(dir, "e2e.log"), o.E2EBin, "--kubeconfig="+kubeconfig,
		"--provider=local", "--ginkgo.focus="+o.NetpolFocus, "--ginkgo.skip="+o.NetpolSkip, "--ginkgo.timeout=4h",
		"--ginkgo.no-color", "--ginkgo.junit-report="+junit, "--report-dir="+dir)
	data, rerr := os.ReadFile(junit)
	if rerr != nil {
		msg := fmt.Sprintf("no JUnit report (exit %d)", code)
		if err != nil {
			msg = err.Error()
		}
		return Suite{Error: msg, Took: time.Since(start)}
	}
	s, perr := ParseJUnit(data, o.NetpolFocus)
	if perr != nil {
		s.Error = perr.Error()
	} else if err != nil {
		s.Error = err.Error()
	}
	s.Took = time.Since(start)
	return s
}

// unavailable tells a missing trellisctl command from a failing one.
func unavailable(out []byte, log string) string {
	data, _ := os.ReadFile(log)
	all := string(out) + string(data)
	if strings.Contains(all, "unknown command") || strings.Contains(all, "unknown flag") {
		return "this trellisctl has no such command"
	}
	return ""
}

func (o Options) connectivity(ctx context.Context, kubeconfig, log string) Suite {
	if _, err := os.Stat(o.CtlBin); err != nil {
		return Suite{Unavailable: "trellisctl not built"}
	}
	start := time.Now()
	out, code, err := runCmd(ctx, o.CtlTimeout, log, o.CtlBin, "--kubeconfig", kubeconfig, "connectivity", "test", "-o", "json")
	if u := unavailable(out, log); u != "" {
		return Suite{Unavailable: u}
	}
	s, perr := ParseScenarios(out)
	switch {
	case err != nil:
		s.Error = err.Error()
	case perr != nil:
		s.Error = fmt.Sprintf("exit %d: %v (log: %s)", code, perr, log)
	}
	s.Took = time.Since(start)
	return s
}

func (o Options) bench(ctx context.Context, kubeconfig, log string) Bench {
	if _, err := os.Stat(o.CtlBin); err != nil {
		return Bench{Unavailable: "trellisctl not built"}
	}
	out, code, err := runCmd(ctx, o.CtlTimeout, log, o.CtlBin, "--kubeconfig", kubeconfig, "bench", "-o", "json")
	if u := unavailable(out, log); u != "" {
		return Bench{Unavailable: u}
	}
	ratios, perr := ParseBenchRatios(out)
	switch {
	case err != nil:
		return Bench{Error: err.Error(), Ratios: ratios}
	case perr != nil:
		return Bench{Error: fmt.Sprintf("exit %d: %v (log: %s)", code, perr, log)}
	}
	return Bench{Ratios: ratios}
}

// latencyNamespace holds the latency measurement's pods and policies.
const latencyNamespace = "compare-latency"

// latency runs MeasureLatency between a client on the first node and a
// server on a node of another subnet.
func (o Options) latency(ctx context.Context, paths state.Paths) (Latency, Latency) {
	fail := func(err error) (Latency, Latency) {
		return Latency{Error: err.Error()}, Latency{Error: err.Error()}
	}
	st, err := state.LoadState(paths)
	if err != nil {
		return fail(err)
	}
	nodes := st.Topology.Nodes
	clientNode, serverNode := nodes[0], nodes[len(nodes)-1]
	for _, n := range nodes[1:] {
		if n.Subnet != clientNode.Subnet {
			serverNode = n
			break
		}
	}
	cs, _, err := kube.Client(paths.AdminKubeconfig())
	if err != nil {
		return fail(err)
	}
	t := PolicyTarget{Namespace: latencyNamespace, Port: 8080,
		ServerLabels: map[string]string{"role": "server"}, ClientLabels: map[string]string{"role": "client"}}
	defer func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), latencyNamespace, metav1.DeleteOptions{})
	}()
	client, server, err := latencyPods(ctx, cs, t, clientNode.Name, serverNode.Name)
	if err != nil {
		return fail(err)
	}
	nsPath, err := probe.PodNetns(client)
	if err != nil {
		return fail(err)
	}
	lo := o.Latency
	lo.Probe = func(_ context.Context, timeout time.Duration) bool {
		return probe.ProbeFromNetns(nsPath, probe.Target{Addr: server.Status.PodIP, Port: t.Port, Proto: "tcp"}, timeout) == nil
	}
	one, burst, err := MeasureLatency(ctx, cs, t, lo)
	if err != nil {
		return fail(err)
	}
	return one, burst
}

// latencyPods creates the namespace, the client (on clientNode) and the
// server (agnhost netexec on t.Port, on serverNode) and waits until both
// are Ready.
func latencyPods(ctx context.Context, cs kubernetes.Interface, t PolicyTarget, clientNode, serverNode string) (*corev1.Pod, *corev1.Pod, error) {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: t.Namespace}}, metav1.CreateOptions{}); err != nil {
		return nil, nil, fmt.Errorf("creating namespace %s: %w", t.Namespace, err)
	}
	zero := int64(0)
	mk := func(name, node string, labels map[string]string, args []string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: t.Namespace, Labels: labels},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{
				Name: "agnhost", Image: images.AgnhostImage, ImagePullPolicy: corev1.PullIfNotPresent, Args: args,
			}}},
		}
	}
	pods := []*corev1.Pod{
		mk("client", clientNode, t.ClientLabels, []string{"pause"}),
		mk("server", serverNode, t.ServerLabels, []string{"netexec", fmt.Sprintf("--http-port=%d", t.Port)}),
	}
	for _, p := range pods {
		if _, err := cs.CoreV1().Pods(t.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, nil, fmt.Errorf("creating pod %s: %w", p.Name, err)
		}
	}
	got := make([]*corev1.Pod, len(pods))
	err := kube.Poll(ctx, 250*time.Millisecond, 2*time.Minute, func(ctx context.Context) (bool, error) {
		for i, p := range pods {
			cur, err := cs.CoreV1().Pods(t.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil || !kube.PodReady(cur) || cur.Status.PodIP == "" {
				return false, nil
			}
			got[i] = cur
		}
		return true, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("latency pods not Ready: %w", err)
	}
	return got[0], got[1], nil
}
