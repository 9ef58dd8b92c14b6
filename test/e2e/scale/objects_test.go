//go:build e2e

package scale

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// The ghost world: API-only Nodes (pod CIDR, InternalIP, the conditions
// and taints the node lifecycle controller would set on a node that never
// reported, so that it has nothing to write), Namespaces of podsPerNS
// pods, Pods bound to ghosts with an address in their status (tolerating
// every taint, so no eviction), and ghostPolicies NetworkPolicies among
// them, as test/e2e/policy's bench makes them.
const (
	podsPerNS     = 100
	apps          = 1000 // app=app<j%apps> on ghost pod j
	ghostLabel    = "trellis.dev/scale-bench"
	createWorkers = 48
)

// bulkClient is a client for creating many objects: no client-side rate
// limit, protobuf, and a connection dialled straight into the control
// plane's namespace (not through the lab's loopback forward).
func bulkClient() (*kubernetes.Clientset, error) {
	cfg := rest.CopyConfig(l.Config)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.Timeout = 60 * time.Second
	cp := l.State.Topology.ControlPlane
	target := net.JoinHostPort(cp.Addr.String(), fmt.Sprint(topology.APIPort))
	cfg.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return topology.DialInNetns(netnsPath(cp.Netns), network, target, 10*time.Second)
	}
	return kubernetes.NewForConfig(cfg)
}

// world is the ghost objects created so far.
type world struct {
	cs       *kubernetes.Clientset
	subnet   netip.Prefix // the measured node's underlay subnet
	place    Placement
	pods     int // ghost pods created
	nsCount  int // ghost namespaces created
	policies int // ghost policies created
}

func ghostName(i int) string { return fmt.Sprintf("ghost-%05d", i) }
func ghostNS(k int) string   { return fmt.Sprintf("scale-g%04d", k) }

// retry runs f until it succeeds, with backoff, for transient API errors
// (the API server under load: timeouts, 429, 5xx).
func retry(ctx context.Context, f func() error) error {
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		if err = f(); err == nil {
			return nil
		}
		// A namespace's default ServiceAccount comes a moment after the
		// namespace (kube-controller-manager): that refusal is transient.
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
			(apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "serviceaccount")) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		}
	}
	return err
}

// parallel runs f(from..to-1) on workers goroutines; the first error
// stops it.
func parallel(ctx context.Context, from, to, workers int, f func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i := from; i < to; i++ {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error { return f(ctx, i) })
	}
	return g.Wait()
}

// ghostNode is ghost i's Node object.
func ghostNode(name string, cidr netip.Prefix, addr netip.Addr) *corev1.Node {
	now := metav1.Now()
	var conds []corev1.NodeCondition
	for _, c := range []corev1.NodeConditionType{corev1.NodeReady, corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure} {
		conds = append(conds, corev1.NodeCondition{Type: c, Status: corev1.ConditionUnknown, Reason: "NodeStatusNeverUpdated",
			Message: "API-only node of the scale bench", LastHeartbeatTime: now, LastTransitionTime: now})
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ghostLabel: "ghost"}},
		Spec: corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}, Taints: []corev1.Taint{
			{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoSchedule},
			{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute, TimeAdded: &now}}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr.String()}},
			Conditions: conds},
	}
}

// createNode creates a ghost Node with its status (the API keeps a Node's
// status on create; patched if it did not).
func createNode(ctx context.Context, cs kubernetes.Interface, n *corev1.Node) error {
	return retry(ctx, func() error {
		got, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			got, err = cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		}
		if err != nil {
			return err
		}
		if len(got.Status.Addresses) == 0 {
			got.Status = n.Status
			_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{})
		}
		return err
	})
}

// ghostPod is ghost pod j on ghost g with address ip.
func ghostPod(j, g int, role string) *corev1.Pod {
	zero, no := int64(0), false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("g%06d", j), Namespace: ghostNS(j / podsPerNS),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", j%apps), "role": role, ghostLabel: "ghost"}},
		Spec: corev1.PodSpec{NodeName: ghostName(g), TerminationGracePeriodSeconds: &zero, AutomountServiceAccountToken: &no,
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "c", Image: images.AgnhostImage,
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
	}
}

// createPod creates p and gives it ip in its status; before is called just
// before the status update (the moment the pod gets its address).
func createPod(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, ip, hostIP netip.Addr, before func()) error {
	return retry(ctx, func() error {
		got, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			got, err = cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		}
		if err != nil {
			return err
		}
		now := metav1.Now()
		got.Status.Phase = corev1.PodRunning
		got.Status.StartTime = &now
		got.Status.HostIP, got.Status.HostIPs = hostIP.String(), []corev1.HostIP{{IP: hostIP.String()}}
		got.Status.PodIP, got.Status.PodIPs = ip.String(), []corev1.PodIP{{IP: ip.String()}}
		if before != nil {
			before()
		}
		_, err = cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, got, metav1.UpdateOptions{})
		return err
	})
}

func roleOf(j int) string { return []string{"a", "b", "c"}[j%3] }

// growTo creates ghosts and ghost pods until the world holds ghosts
// ghosts and pods pods, then the ghost policies if none exist yet.
func (w *world) growTo(ctx context.Context, ghosts, pods, policies int, progress func(string)) error {
	if ghosts > MaxGhosts-sampleRange {
		return fmt.Errorf("%d ghosts: the address plan holds %d (and %d node-add samples)", ghosts, MaxGhosts-sampleRange, sampleRange)
	}
	first := len(w.place.Slots)
	start := time.Now()
	if err := parallel(ctx, first, ghosts, createWorkers, func(ctx context.Context, i int) error {
		return createNode(ctx, w.cs, ghostNode(ghostName(i), GhostCIDR(i), GhostAddr(i, w.subnet)))
	}); err != nil {
		return fmt.Errorf("creating ghost nodes %d..%d: %w", first, ghosts-1, err)
	}
	w.place.Grow(ghosts)
	progress(fmt.Sprintf("%d ghost nodes created in %s", ghosts-first, time.Since(start).Round(time.Millisecond)))

	needNS := (pods + podsPerNS - 1) / podsPerNS
	if err := parallel(ctx, w.nsCount, needNS, createWorkers, func(ctx context.Context, k int) error {
		return retry(ctx, func() error {
			_, err := w.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ghostNS(k),
				Labels: map[string]string{ghostLabel: "ghost"}}}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		})
	}); err != nil {
		return fmt.Errorf("creating ghost namespaces: %w", err)
	}
	w.nsCount = max(w.nsCount, needNS)

	n := pods - w.pods
	if n > 0 {
		slots, err := w.place.Place(n, first)
		if err != nil {
			return err
		}
		start = time.Now()
		var done atomic.Int64
		base := w.pods
		stop := make(chan struct{})
		go func() {
			tick := time.NewTicker(30 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					d := done.Load()
					progress(fmt.Sprintf("  %d of %d pods (%.0f/s)", d, n, float64(d)/time.Since(start).Seconds()))
				}
			}
		}()
		err = parallel(ctx, 0, n, createWorkers, func(ctx context.Context, k int) error {
			j, g := base+k, slots[k][0]
			err := createPod(ctx, w.cs, ghostPod(j, g, roleOf(j)), GhostPodIP(g, slots[k][1]), GhostAddr(g, w.subnet), nil)
			done.Add(1)
			return err
		})
		close(stop)
		if err != nil {
			return fmt.Errorf("creating ghost pods: %w", err)
		}
		w.pods = pods
		progress(fmt.Sprintf("%d ghost pods with addresses created in %s (%.0f/s)", n, time.Since(start).Round(time.Millisecond),
			float64(n)/time.Since(start).Seconds()))
	}
	if w.policies < policies {
		start = time.Now()
		from := w.policies
		if err := parallel(ctx, from, policies, createWorkers, func(ctx context.Context, k int) error {
			return retry(ctx, func() error {
				_, err := w.cs.NetworkingV1().NetworkPolicies(ghostNS(k%w.nsCount)).Create(ctx, ghostPolicy(k, w.nsCount), metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					return nil
				}
				return err
			})
		}); err != nil {
			return fmt.Errorf("creating ghost policies: %w", err)
		}
		w.policies = policies
		progress(fmt.Sprintf("%d ghost policies created in %s", policies-from, time.Since(start).Round(time.Millisecond)))
	}
	return nil
}

// ghostPolicy k selects app<k> in its namespace and admits app<k+1> on
// the named port http.
func ghostPolicy(k, nsCount int) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	http := intstr.FromString("http")
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("np%04d", k), Namespace: ghostNS(k % nsCount)},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", k%apps)}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (k+1)%apps)}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}}}}}}
}
