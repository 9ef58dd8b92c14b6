package connectivity

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Prober connects from one pod to a target.
type Prober interface {
	// Probe connects from pod from (NS/POD) to to (NS/POD or an IP address)
	// on port/proto (tcp: a connection is established; udp: agnhost
	// netexec answers "hostname"). It returns (false, nil) for "no answer"
	// and an error when the probe could not be attempted (a bad request, a
	// missing pod): an error is never a verdict.
	Probe(ctx context.Context, from, to string, port int, proto string) (bool, error)
}

// ErrUsage marks a bad probe request (exit status 2).
var ErrUsage = errors.New("usage")

// ParsePortProto parses "80/tcp".
func ParsePortProto(s string) (int, string, error) {
	ps, proto, ok := strings.Cut(strings.ToLower(s), "/")
	if !ok {
		proto = "tcp"
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return 0, "", fmt.Errorf("%w: bad port %q (want PORT/PROTO, e.g. 80/tcp)", ErrUsage, s)
	}
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return 0, "", fmt.Errorf("%w: unknown protocol %q (tcp, udp or sctp)", ErrUsage, proto)
	}
	return port, proto, nil
}

// SplitPodRef parses "NS/POD".
func SplitPodRef(s string) (string, string, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%w: %q is not NAMESPACE/POD", ErrUsage, s)
	}
	return ns, name, nil
}

// ResolveTarget turns "NS/POD" or an IP address into an address.
func ResolveTarget(ctx context.Context, cs kubernetes.Interface, s string) (string, error) {
	if ip := net.ParseIP(s); ip != nil {
		return ip.String(), nil
	}
	ns, name, err := SplitPodRef(s)
	if err != nil {
		return "", fmt.Errorf("%w: target %q is neither NS/POD nor an IP address", ErrUsage, s)
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("target pod %s: %w", s, err)
	}
	if pod.Status.PodIP == "" {
		return "", fmt.Errorf("target pod %s has no IP yet", s)
	}
	return pod.Status.PodIP, nil
}

// ListPods returns the Ready, non-host-network pods (as NS/POD) matching
// selector in namespaces (default: every namespace but kube-*).
func ListPods(ctx context.Context, cs kubernetes.Interface, namespaces []string, selector string) ([]string, error) {
	if len(namespaces) == 0 {
		all, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing namespaces: %w", err)
		}
		for _, n := range all.Items {
			if !strings.HasPrefix(n.Name, "kube-") {
				namespaces = append(namespaces, n.Name)
			}
		}
	}
	var pods []string
	for _, ns := range namespaces {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, fmt.Errorf("listing pods in %s: %w", ns, err)
		}
		for i := range list.Items {
			if p := &list.Items[i]; podReady(p) && !p.Spec.HostNetwork {
				pods = append(pods, p.Namespace+"/"+p.Name)
			}
		}
	}
	return pods, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ProbeAll probes every pair of pods (port/proto) with bounded parallelism
// and returns the observed matrix. A probe that cannot be attempted counts as
// "not reached" and its error is returned alongside.
func ProbeAll(ctx context.Context, p Prober, pods []string, port int, proto string, parallel int) (*Matrix, error) {
	m := NewMatrix(pods, false)
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for _, a := range pods {
		for _, b := range pods {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ok, err := p.Probe(ctx, a, b, port, proto)
				mu.Lock()
				defer mu.Unlock()
				m.Set(a, b, ok)
				if err != nil && firstErr == nil {
					firstErr = err
				}
			}()
		}
	}
	wg.Wait()
	return m, firstErr
}

// ExpectParallel is how many probes Expect runs at once.
const ExpectParallel = 8

// Expect probes every pair of expected.Pods until the observed matrix
// equals expected, at most attempts times, a second apart (a first packet
// may race the programming of a new pod's routes or policy). It returns the
// last observed matrix; an error means a probe could not be attempted.
func Expect(ctx context.Context, p Prober, expected *Matrix, port int, proto string, attempts int) (*Matrix, error) {
	var observed *Matrix
	for attempt := 0; attempt < max(attempts, 1); attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return observed, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		var err error
		observed, err = ProbeAll(ctx, p, expected.Pods, port, proto, ExpectParallel)
		if err != nil {
			return observed, err
		}
		if expected.Diff(observed) == 0 {
			break
		}
	}
	return observed, nil
}
