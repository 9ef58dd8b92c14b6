package ctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/dpbench"
)

// BenchNamespaceLabel marks the namespaces `trellisctl bench` creates.
const BenchNamespaceLabel = "trellis.dev/bench"

// Containers of the benchmark pods.
const (
	benchIperf  = "iperf3"
	benchRR     = "rr"
	benchClient = "client"
)

// benchNodes returns the server and client nodes: the given ones (each must
// exist), or the first two Ready, schedulable, untainted nodes by name.
func benchNodes(ctx context.Context, cs kubernetes.Interface, want []string) (server, client string, err error) {
	if len(want) == 2 {
		for _, n := range want {
			if _, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				return "", "", Usage("node %q not found", n)
			} else if err != nil {
				return "", "", fmt.Errorf("reading node %s: %w", n, err)
			}
		}
		return want[0], want[1], nil
	}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", "", fmt.Errorf("listing nodes: %w", err)
	}
	var ok []string
	for i := range list.Items {
		if benchSchedulable(&list.Items[i]) {
			ok = append(ok, list.Items[i].Name)
		}
	}
	sort.Strings(ok)
	if len(ok) < 2 {
		return "", "", Usage("bench needs two Ready, schedulable nodes without NoSchedule taints; found %d %v (name two with --nodes)", len(ok), ok)
	}
	return ok[0], ok[1], nil
}

func benchSchedulable(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			return false
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

var _ benchProbe = (*benchDeployment)(nil)

// benchDeployment is the namespace with the servers and clients, as pods
// and as hostNetwork pods, on the server and client nodes; it runs the
// measurements by exec through the API server (it implements benchProbe).
type benchDeployment struct {
	o              *Options
	cs             kubernetes.Interface
	image          string
	server, client string
	progress       io.Writer

	ns   string
	pods map[string]*corev1.Pod // by name, once Ready
}

func benchPodName(side BenchSide, role string) string { return string(side) + "-" + role }

func (d *benchDeployment) deploy(ctx context.Context, timeout time.Duration) error {
	ns, err := d.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "trellis-bench-",
		Labels: map[string]string{
			BenchNamespaceLabel:                  "true",
			"app.kubernetes.io/managed-by":       "trellisctl",
			"pod-security.kubernetes.io/enforce": "privileged",
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the benchmark namespace: %w", err)
	}
	d.ns = ns.Name
	fmt.Fprintf(d.progress, "namespace %s: servers on %s, clients on %s\n", d.ns, d.server, d.client)
	for _, side := range []BenchSide{SidePod, SideNode} {
		for _, role := range []string{"server", "client"} {
			if _, err := d.cs.CoreV1().Pods(d.ns).Create(ctx, d.pod(side, role), metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating pod %s: %w", benchPodName(side, role), err)
			}
		}
	}
	return d.waitReady(ctx, timeout)
}

// pod is the server (iperf3 and the echo server) or the client of a side.
func (d *benchDeployment) pod(side BenchSide, role string) *corev1.Pod {
	zero := int64(0)
	no := false
	netAdmin := &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
	c := func(name string, cmd ...string) corev1.Container {
		return corev1.Container{Name: name, Image: d.image, ImagePullPolicy: corev1.PullIfNotPresent, Command: cmd, SecurityContext: netAdmin}
	}
	node := d.client
	containers := []corev1.Container{c(benchClient, "/trellis-bench", "sleep")}
	if role == "server" {
		node = d.server
		containers = []corev1.Container{
			c(benchIperf, "iperf3", "-s", "-p", strconv.Itoa(dpbench.IperfPort)),
			c(benchRR, "/trellis-bench", "serve", strconv.Itoa(dpbench.RRPort)),
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: benchPodName(side, role), Labels: map[string]string{BenchNamespaceLabel: string(side) + "-" + role}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			HostNetwork:                   side == SideNode,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			TerminationGracePeriodSeconds: &zero,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			RestartPolicy:                 corev1.RestartPolicyNever,
			Containers:                    containers,
		},
	}
}

// waitReady waits until the four pods run; on timeout it names each pod
// that does not, its node and why.
func (d *benchDeployment) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		list, err := d.cs.CoreV1().Pods(d.ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			var why []string
			d.pods = map[string]*corev1.Pod{}
			for i := range list.Items {
				p := &list.Items[i]
				if reason := podNotReady(p); reason != "" {
					why = append(why, fmt.Sprintf("pod %s on node %s: %s", p.Name, p.Spec.NodeName, reason))
					continue
				}
				d.pods[p.Name] = p
			}
			if len(why) == 0 && len(d.pods) == 4 {
				fmt.Fprintf(d.progress, "pods running; measuring\n")
				return nil
			}
			if failed := terminal(list.Items); failed != "" || ctx.Err() != nil {
				if failed == "" {
					failed = strings.Join(why, "; ")
				}
				return fmt.Errorf("benchmark pods not running after %s: %s", timeout, failed)
			}
		} else if ctx.Err() != nil {
			return fmt.Errorf("waiting for the benchmark pods: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// podNotReady is why p is not Ready yet, or "" when it is.
func podNotReady(p *corev1.Pod) string {
	for _, s := range p.Status.ContainerStatuses {
		if w := s.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" {
			msg := w.Reason
			if w.Message != "" {
				msg += ": " + w.Message
			}
			if strings.Contains(w.Reason, "Image") {
				msg += " (the image comes from `make bench-image`; import it on every node or pass --image)"
			}
			return msg
		}
		if t := s.State.Terminated; t != nil {
			return fmt.Sprintf("container %s exited (%s, code %d): %s", s.Name, t.Reason, t.ExitCode, strings.TrimSpace(t.Message))
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
			return ""
		}
	}
	if p.Status.Reason != "" {
		return fmt.Sprintf("%s: %s", p.Status.Reason, p.Status.Message)
	}
	return "not ready (phase " + string(p.Status.Phase) + ")"
}

// terminal names a pod that can no longer become Ready.
func terminal(pods []corev1.Pod) string {
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return fmt.Sprintf("pod %s on node %s: %s", p.Name, p.Spec.NodeName, podNotReady(p))
		}
	}
	return ""
}

// cleanup deletes the namespace and waits (bounded) until it is gone, also
// when the command was interrupted.
func (d *benchDeployment) cleanup() {
	if d.ns == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := d.cs.CoreV1().Namespaces().Delete(ctx, d.ns, metav1.DeleteOptions{})
	for err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			continue
		case <-time.After(500 * time.Millisecond):
		}
		_, err = d.cs.CoreV1().Namespaces().Get(ctx, d.ns, metav1.GetOptions{})
	}
	if !apierrors.IsNotFound(err) {
		fmt.Fprintf(d.progress, "WARNING: namespace %s may remain (kubectl delete namespace %s): %v\n", d.ns, d.ns, err)
	}
}

// exec runs cmd in a container of a benchmark pod and returns its stdout,
// also when it fails (iperf3 reports its errors there).
func (d *benchDeployment) exec(ctx context.Context, pod, container string, timeout time.Duration, cmd ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out bytes.Buffer
	err := d.o.Exec(ctx, d.pods[pod], container, cmd, &out)
	return out.Bytes(), err
}

// retry runs f up to three times: a server can still be starting, or busy
// finishing the previous test.
func retry(ctx context.Context, f func() (float64, error)) (float64, error) {
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("interrupted: %w", ctx.Err())
		}
		var v float64
		if v, err = f(); err == nil {
			return v, nil
		}
	}
	return 0, err
}

func (d *benchDeployment) serverIP(side BenchSide) string {
	return d.pods[benchPodName(side, "server")].Status.PodIP
}

// Throughput implements benchProbe with iperf3 in the client pod.
func (d *benchDeployment) Throughput(ctx context.Context, side BenchSide, congestion string, seconds int) (float64, error) {
	args := dpbench.IperfClientArgs(d.serverIP(side), dpbench.IperfPort, dpbench.IperfOptions{Seconds: seconds, Congestion: congestion})
	return retry(ctx, func() (float64, error) {
		out, err := d.exec(ctx, benchPodName(side, "client"), benchClient, time.Duration(seconds)*time.Second+30*time.Second, args...)
		v, perr := dpbench.ParseIperf(out)
		if err != nil && (perr == nil || len(out) == 0) {
			return 0, err // the exec failed; iperf3's report, if any, says nothing more
		}
		return v, perr // iperf3's own error ("iperf3: unable to connect ...") when it failed
	})
}

// RR implements benchProbe with trellis-bench rr in the client pod.
func (d *benchDeployment) RR(ctx context.Context, side BenchSide, seconds int) (float64, error) {
	addr := net.JoinHostPort(d.serverIP(side), strconv.Itoa(dpbench.RRPort))
	return retry(ctx, func() (float64, error) {
		out, err := d.exec(ctx, benchPodName(side, "client"), benchClient, time.Duration(seconds)*time.Second+30*time.Second,
			"/trellis-bench", "rr", addr, strconv.Itoa(seconds))
		if err != nil {
			return 0, err
		}
		return dpbench.ParseRR(out)
	})
}

// Congestion implements benchProbe: each node's kernel list, read in its
// hostNetwork pod.
func (d *benchDeployment) Congestion(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	for _, role := range []string{"server", "client"} {
		name := benchPodName(SideNode, role)
		container := benchClient
		if role == "server" {
			container = benchRR
		}
		b, err := d.exec(ctx, name, container, 30*time.Second, "/trellis-bench", "cc")
		if err != nil {
			return nil, err
		}
		out[d.pods[name].Spec.NodeName] = strings.Fields(string(b))
	}
	return out, nil
}
