package connectivity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"
)

// ExecProber probes through the API server, as `kubectl exec` does: it runs
// agnhost's `connect` in the source pod, so it works against any cluster
// whose probe pods run agnhost (the upstream NetworkPolicy suite probes the
// same way). A connect that fails with agnhost's network error prefixes
// (TIMEOUT, REFUSED, DNS, OTHER) is "no answer"; anything else is an error.
type ExecProber struct {
	Config  *rest.Config
	CS      kubernetes.Interface
	Timeout time.Duration // per probe; default 2s
	// Container names the source pod's container to exec in; default its
	// first container.
	Container string
	// Agnhost is agnhost's path in that container; default /agnhost.
	Agnhost string
}

var _ Prober = ExecProber{}

// Probe implements Prober.
func (e ExecProber) Probe(ctx context.Context, from, to string, port int, proto string) (bool, error) {
	ns, name, err := SplitPodRef(from)
	if err != nil {
		return false, err
	}
	pod, err := e.CS.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("source pod %s: %w", from, err)
	}
	addr, err := ResolveTarget(ctx, e.CS, to)
	if err != nil {
		return false, err
	}
	timeout := e.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	container := e.Container
	if container == "" && len(pod.Spec.Containers) > 0 {
		container = pod.Spec.Containers[0].Name
	}
	agnhost := e.Agnhost
	if agnhost == "" {
		agnhost = "/agnhost"
	}
	cmd := []string{agnhost, "connect", net.JoinHostPort(addr, strconv.Itoa(port)),
		"--protocol=" + proto, "--timeout=" + timeout.String()}
	// An exec whose stream stalls (a loaded kubelet or runtime) has not
	// probed anything: it is run again, at most execAttempts times in all,
	// and only a verdict from agnhost itself is returned as one.
	for attempt := 1; ; attempt++ {
		ok, err := e.connectOnce(ctx, pod, container, cmd, timeout, from)
		if err == nil || attempt == execAttempts || ctx.Err() != nil {
			return ok, err
		}
	}
}

// execAttempts bounds the runs of one probe whose exec did not complete.
const execAttempts = 3

// connectOnce runs cmd once, bounded by timeout plus the exec's own setup.
func (e ExecProber) connectOnce(ctx context.Context, pod *corev1.Pod, container string, cmd []string, timeout time.Duration, from string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := e.exec(ctx, pod, container, cmd, &stdout, &stderr)
	return execVerdict(err, stderr.String(), from)
}

// exec runs cmd in the container (Exec).
func (e ExecProber) exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, stdout, stderr *bytes.Buffer) error {
	return Exec(ctx, e.Config, e.CS, pod, container, cmd, stdout, stderr)
}

// Exec runs cmd in container of pod through the API server, over WebSocket
// with a fallback to SPDY (kubectl's order). A command that exits non-zero
// returns a k8s.io/client-go/util/exec.ExitError.
func Exec(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, pod *corev1.Pod, container string, cmd []string, stdout, stderr io.Writer) error {
	return ExecStream(ctx, cfg, cs, pod, container, cmd, remotecommand.StreamOptions{Stdout: stdout, Stderr: stderr})
}

// ExecStream is Exec with the streams of opts (stdin too, when set). It
// falls back to SPDY only when the WebSocket upgrade itself failed, so a
// command is never started twice.
func ExecStream(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, pod *corev1.Pod, container string, cmd []string, opts remotecommand.StreamOptions) error {
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).
		SubResource("exec").VersionedParams(&corev1.PodExecOptions{
		Container: container, Command: cmd, Stdin: opts.Stdin != nil, Stdout: opts.Stdout != nil, Stderr: opts.Stderr != nil,
	}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return fmt.Errorf("exec in %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return fmt.Errorf("exec in %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return fmt.Errorf("exec in %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return ex.StreamWithContext(ctx, opts)
}

// ConnectVerdict turns the outcome of an `agnhost connect` run in pod from
// (its error and stderr) into a probe result: (true, nil) connected,
// (false, nil) no answer (agnhost's TIMEOUT, REFUSED, DNS or OTHER), an
// error when the probe could not be attempted.
func ConnectVerdict(err error, stderr, from string) (bool, error) {
	return execVerdict(err, stderr, from)
}

// agnhostNoAnswer are the prefixes agnhost connect prints for a network
// failure (its UNKNOWN is a bad request, not a verdict).
var agnhostNoAnswer = []string{"TIMEOUT", "REFUSED", "DNS", "OTHER"}

// execVerdict turns the outcome of `agnhost connect` into a probe result.
func execVerdict(err error, stderr, from string) (bool, error) {
	if err == nil {
		return true, nil
	}
	var ee utilexec.ExitError
	if errors.As(err, &ee) && ee.ExitStatus() == 1 {
		for _, p := range agnhostNoAnswer {
			if strings.HasPrefix(strings.TrimSpace(stderr), p) {
				return false, nil
			}
		}
	}
	return false, fmt.Errorf("agnhost connect in %s: %w: %s", from, err, strings.TrimSpace(stderr))
}
