package compare

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// LatencyOptions sets up the policy programming latency measurement. The
// method is the same for every CNI: probes are plain TCP connects from the
// client pod's network namespace, started every Interval (each with its own
// Timeout, so a dropped and a rejected connection are seen alike), and a
// change's latency is the start of the first probe whose verdict is the new
// one, minus the start of the API call that made the change.
type LatencyOptions struct {
	// Probe reports whether a TCP connection from the client pod to the
	// server pod's port succeeds within timeout.
	Probe      func(ctx context.Context, timeout time.Duration) bool
	Interval   time.Duration // between probe starts (the resolution)
	Timeout    time.Duration // of one probe
	FlipWithin time.Duration // a change not seen by then counts as a timeout
	Repeats    int           // one-change samples
	Bursts     int           // 100-policy samples
	BurstSize  int           // policies per burst (100)
}

// PolicyTarget is what the measured policies select and admit.
type PolicyTarget struct {
	Namespace    string
	ServerLabels map[string]string
	ClientLabels map[string]string
	Port         int
}

// waitVerdict probes from start until a probe started at or after start
// returns want, and returns that probe's start time.
func (o LatencyOptions) waitVerdict(ctx context.Context, start time.Time, want bool) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, o.FlipWithin)
	defer cancel()
	var (
		mu    sync.Mutex
		first time.Time
		wg    sync.WaitGroup
	)
	found := make(chan struct{})
	var once sync.Once
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		began := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if o.Probe(ctx, o.Timeout) != want || ctx.Err() != nil {
				return
			}
			mu.Lock()
			if first.IsZero() || began.Before(first) {
				first = began
			}
			mu.Unlock()
			once.Do(func() { close(found) })
		}()
		select {
		case <-found:
			// Probes started earlier may still report the new verdict:
			// wait for them, the earliest start wins.
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if first.Before(start) {
				first = start
			}
			return first, nil
		case <-ctx.Done():
			wg.Wait()
			return time.Time{}, fmt.Errorf("verdict %v not seen within %s", want, o.FlipWithin)
		case <-t.C:
		}
	}
}

// settle waits until n probes in a row give want (a state, not a timing).
func (o LatencyOptions) settle(ctx context.Context, want bool, n int) error {
	deadline := time.Now().Add(o.FlipWithin)
	streak := 0
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if o.Probe(ctx, o.Timeout) == want {
			streak++
			if streak >= n {
				return nil
			}
		} else {
			streak = 0
		}
		time.Sleep(o.Interval)
	}
	return fmt.Errorf("the probe did not settle to %v within %s", want, o.FlipWithin)
}

// DenyPolicy isolates the server pods for ingress.
func DenyPolicy(t PolicyTarget) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-ingress", Namespace: t.Namespace},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: t.ServerLabels},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}

// AllowPolicy admits from pods labelled from to the server's port.
func AllowPolicy(t PolicyTarget, name string, from map[string]string) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(int32(t.Port))
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: t.Namespace},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: t.ServerLabels},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: from}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}
}

// BurstPolicies are n policies selecting the server: n-1 admit clients no
// pod is (label decoy=<i>), the last admits the client.
func BurstPolicies(t PolicyTarget, n int) []*networkingv1.NetworkPolicy {
	out := make([]*networkingv1.NetworkPolicy, 0, n)
	for i := 0; i < n-1; i++ {
		out = append(out, AllowPolicy(t, fmt.Sprintf("burst-%03d", i), map[string]string{"decoy": fmt.Sprintf("d%03d", i)}))
	}
	return append(out, AllowPolicy(t, fmt.Sprintf("burst-%03d", n-1), t.ClientLabels))
}

// MeasureLatency measures, with the server isolated by a deny-all ingress
// policy: (1) one change: creating one policy that admits the client, until
// the client connects (Repeats samples, the policy deleted and the deny
// verdict restored between samples); (2) a burst: BurstSize policies
// created back to back, the admitting one last, from that last create until
// the client connects (Bursts samples). Both directions of every change are
// applied the same way for every CNI; only deny→allow flips are timed, since
// a success is seen at once while a denial is seen only when a probe gives up.
func MeasureLatency(ctx context.Context, cs kubernetes.Interface, t PolicyTarget, o LatencyOptions) (one, burst Latency, err error) {
	np := cs.NetworkingV1().NetworkPolicies(t.Namespace)
	if err := o.settle(ctx, true, 3); err != nil {
		return one, burst, fmt.Errorf("before any policy the client cannot reach the server: %w", err)
	}
	if _, err := np.Create(ctx, DenyPolicy(t), metav1.CreateOptions{}); err != nil {
		return one, burst, fmt.Errorf("creating the deny policy: %w", err)
	}
	if err := o.settle(ctx, false, 3); err != nil {
		return one, burst, fmt.Errorf("the deny-all ingress policy is not enforced: %w", err)
	}
	for i := 0; i < o.Repeats; i++ {
		start := time.Now()
		if _, err := np.Create(ctx, AllowPolicy(t, "allow-client", t.ClientLabels), metav1.CreateOptions{}); err != nil {
			return one, burst, fmt.Errorf("creating the allow policy: %w", err)
		}
		if at, err := o.waitVerdict(ctx, start, true); err != nil {
			one.Timeouts++
		} else {
			one.Samples = append(one.Samples, at.Sub(start))
		}
		if err := np.Delete(ctx, "allow-client", metav1.DeleteOptions{}); err != nil {
			return one, burst, fmt.Errorf("deleting the allow policy: %w", err)
		}
		if err := o.settle(ctx, false, 3); err != nil {
			one.Error = "deleting the allow policy did not restore the denial"
			return one, burst, nil
		}
	}
	for i := 0; i < o.Bursts; i++ {
		pols := BurstPolicies(t, o.BurstSize)
		var start time.Time
		for j, p := range pols {
			if j == len(pols)-1 {
				start = time.Now()
			}
			if _, err := np.Create(ctx, p, metav1.CreateOptions{}); err != nil {
				return one, burst, fmt.Errorf("creating %s: %w", p.Name, err)
			}
		}
		if at, err := o.waitVerdict(ctx, start, true); err != nil {
			burst.Timeouts++
		} else {
			burst.Samples = append(burst.Samples, at.Sub(start))
		}
		var errs []error
		for _, p := range pols {
			errs = append(errs, np.Delete(ctx, p.Name, metav1.DeleteOptions{}))
		}
		if err := errors.Join(errs...); err != nil {
			return one, burst, fmt.Errorf("deleting the burst: %w", err)
		}
		if err := o.settle(ctx, false, 3); err != nil {
			burst.Error = "deleting the burst did not restore the denial"
			return one, burst, nil
		}
	}
	return one, burst, nil
}
