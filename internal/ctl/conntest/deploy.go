package conntest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Labels every object the test creates carries, so that a leftover (a
// killed run) is recognisable: `kubectl delete ns -l trellis.dev/connectivity-test`.
const (
	LabelTest      = "trellis.dev/connectivity-test"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "trellisctl"
	labelRole      = "trellis.dev/conn-role"
	labelEcho      = "trellis.dev/conn-echo"
	labelAllowed   = "trellis.dev/conn-allowed"
	serviceName    = "echo"
)

// Pod roles. The policy targets run on other nodes than the clients, so
// that policies are enforced across nodes.
const (
	RoleClient       = "client"             // node A
	RoleServerA      = "server-a"           // node A: same-node peer of client
	RoleServerB      = "server-b"           // node B
	RoleHost         = "host-b"             // node B, hostNetwork
	RoleAllowed      = "client-allowed"     // node A, labelled allowed
	RoleEgressDenied = "client-deny-egress" // node A, egress isolated
	RolePeer         = "peer-client"        // node A, in PeerNS
	RoleDenyIngress  = "target-deny-ingress"
	RoleLabel        = "target-pod-label"
	RoleNamespace    = "target-namespace"
	RoleIPBlock      = "target-ipblock"
	RolePort         = "target-port"
	RoleNamedPort    = "target-named-port"
)

var policyTargets = []string{RoleDenyIngress, RoleLabel, RoleNamespace, RoleIPBlock, RolePort, RoleNamedPort}

// SetupError is a failure to deploy the test's pods. BadInput marks a cause
// in the command line (an --image the nodes cannot run).
type SetupError struct {
	BadInput bool
	Err      error
}

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

// NewRunID is a random suffix for the namespace names.
func NewRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SchedulableNodes are the Ready nodes without NoSchedule/NoExecute taints
// and not cordoned, by name, with their InternalIPs; why lists the others.
func SchedulableNodes(nodes []corev1.Node) (names []string, ips map[string]string, why []string) {
	ips = map[string]string{}
	for i := range nodes {
		n := &nodes[i]
		if reason := unschedulable(n); reason != "" {
			why = append(why, n.Name+": "+reason)
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && ips[n.Name] == "" {
				ips[n.Name] = a.Address
			}
		}
		if ips[n.Name] == "" {
			why = append(why, n.Name+": no InternalIP")
			continue
		}
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names, ips, why
}

func unschedulable(n *corev1.Node) string {
	if n.Spec.Unschedulable {
		return "cordoned"
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return "not Ready"
	}
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			return "tainted " + t.Key + ":" + string(t.Effect)
		}
	}
	return ""
}

// Deployment is what Deploy creates, for Cleanup.
type Deployment struct {
	Namespaces []string
}

// Deploy creates the test's namespaces, pods and Service on e.Nodes and
// waits (at most readyTimeout) until every pod runs, filling e.Pods,
// e.ServiceIP, e.NodePort and e.HostPort. The returned Deployment lists
// what to clean up, also when Deploy fails.
func Deploy(ctx context.Context, e *Env, image, runID string, readyTimeout time.Duration) (*Deployment, error) {
	d := &Deployment{}
	labels := map[string]string{LabelTest: runID, LabelManagedBy: ManagedBy}
	for _, ns := range []string{e.NS, e.PeerNS} {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: mergeLabels(labels, map[string]string{
			// the hostNetwork pod needs the privileged Pod Security level
			"pod-security.kubernetes.io/enforce": "privileged",
		})}}
		if _, err := e.CS.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return d, fmt.Errorf("creating namespace %s: %w", ns, err)
		}
		d.Namespaces = append(d.Namespaces, ns)
	}
	hp, _ := rand.Int(rand.Reader, big.NewInt(10000))
	e.HostPort = 20000 + int(hp.Int64())
	nodeA := e.Nodes[0]
	nodeB := e.Nodes[min(1, len(e.Nodes)-1)]
	place := map[string]string{RoleClient: nodeA, RoleServerA: nodeA, RoleServerB: nodeB, RoleHost: nodeB,
		RoleAllowed: nodeA, RoleEgressDenied: nodeA, RolePeer: nodeA}
	for i, r := range policyTargets {
		place[r] = nodeB
		if len(e.Nodes) > 2 {
			place[r] = e.Nodes[1+i%(len(e.Nodes)-1)]
		}
	}
	roles := make([]string, 0, len(place))
	for r := range place {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	for _, role := range roles {
		ns := e.NS
		if role == RolePeer {
			ns = e.PeerNS
		}
		pod := probePod(ns, role, place[role], image, labels, e.HostPort)
		if _, err := e.CS.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return d, fmt.Errorf("creating pod %s/%s: %w", ns, role, err)
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: serviceName, Namespace: e.NS, Labels: labels},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{labelEcho: "true"},
			Ports: []corev1.ServicePort{
				{Name: HTTPPortName, Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString(HTTPPortName)},
				{Name: UDPPortName, Port: 81, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString(UDPPortName)},
			}}}
	created, err := e.CS.CoreV1().Services(e.NS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return d, fmt.Errorf("creating Service %s/%s: %w", e.NS, serviceName, err)
	}
	e.ServiceIP = created.Spec.ClusterIP
	e.NodePort = int(created.Spec.Ports[0].NodePort)
	return d, waitRunning(ctx, e, place, readyTimeout)
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// probePod is an agnhost netexec pod pinned to node through the scheduler
// (node affinity on its name, as DaemonSets do), so a node it cannot run
// on shows as a scheduling failure.
func probePod(ns, role, node, image string, labels map[string]string, hostPort int) *corev1.Pod {
	podLabels := mergeLabels(labels, map[string]string{labelRole: role})
	switch role {
	case RoleServerA, RoleServerB:
		podLabels[labelEcho] = "true"
	case RoleAllowed:
		podLabels[labelAllowed] = "true"
	}
	c := corev1.Container{Name: container, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
		Args: []string{"netexec", "--http-port=" + strconv.Itoa(HTTPPort), "--udp-port=" + strconv.Itoa(UDPPort)},
		Ports: []corev1.ContainerPort{
			{Name: HTTPPortName, ContainerPort: HTTPPort, Protocol: corev1.ProtocolTCP},
			{Name: UDPPortName, ContainerPort: UDPPort, Protocol: corev1.ProtocolUDP},
		}}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: ns, Labels: podLabels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(0)),
			AutomountServiceAccountToken:  ptr.To(false),
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
				}}}}},
			Containers: []corev1.Container{c},
		}}
	if role == RoleHost {
		p.Spec.HostNetwork = true
		p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
		// serve-hostname, not netexec: on the node's address, nothing but
		// an HTTP answer with the pod's name.
		p.Spec.Containers[0].Args = []string{"serve-hostname", "--http", "--port=" + strconv.Itoa(hostPort)}
		p.Spec.Containers[0].Ports = nil
	}
	return p
}

// waitRunning polls the pods until every one runs with its container ready
// and an IP; on timeout it says, per pod, which node and why.
func waitRunning(ctx context.Context, e *Env, place map[string]string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	e.Pods = map[string]*corev1.Pod{}
	for {
		pending := map[string]*corev1.Pod{}
		for _, ns := range []string{e.NS, e.PeerNS} {
			list, err := e.CS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("listing pods in %s: %w", ns, err)
			}
			if list == nil {
				continue
			}
			for i := range list.Items {
				p := &list.Items[i]
				role := p.Labels[labelRole]
				if podRunning(p) {
					e.Pods[role] = p
				} else {
					pending[role] = p
				}
			}
		}
		if len(pending) == 0 && len(e.Pods) == len(place) {
			return nil
		}
		select {
		case <-ctx.Done():
			return diagnose(context.WithoutCancel(ctx), e, place, pending, timeout)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func podRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if !c.Ready {
			return false
		}
	}
	return len(p.Status.ContainerStatuses) > 0
}

// diagnose explains why pods did not run: the scheduler's condition, the
// container's waiting reason, the pod's last warning event.
func diagnose(ctx context.Context, e *Env, place map[string]string, pending map[string]*corev1.Pod, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var lines []string
	badImage := false
	roles := make([]string, 0, len(place))
	for r := range place {
		if e.Pods[r] == nil {
			roles = append(roles, r)
		}
	}
	sort.Strings(roles)
	for _, role := range roles {
		p := pending[role]
		why := "not created"
		if p != nil {
			why = podProblem(p)
			if ev := lastWarning(ctx, e, p); ev != "" {
				why += "; last warning: " + ev
			}
			for _, c := range p.Status.ContainerStatuses {
				if w := c.State.Waiting; w != nil && (strings.Contains(w.Reason, "Image") || w.Reason == "ErrImagePull") {
					badImage = true
				}
			}
		}
		lines = append(lines, fmt.Sprintf("pod %s on node %s: %s", role, place[role], why))
	}
	err := fmt.Errorf("test pods not running after %s: %s", timeout, strings.Join(lines, " | "))
	return &SetupError{BadInput: badImage, Err: err}
}

func podProblem(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			return fmt.Sprintf("not scheduled (%s: %s)", c.Reason, c.Message)
		}
	}
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			return fmt.Sprintf("container waiting (%s: %s)", w.Reason, firstLine(w.Message))
		}
		if t := c.State.Terminated; t != nil {
			return fmt.Sprintf("container terminated (%s, exit %d)", t.Reason, t.ExitCode)
		}
	}
	return fmt.Sprintf("phase %s, IP %q", p.Status.Phase, p.Status.PodIP)
}

func lastWarning(ctx context.Context, e *Env, p *corev1.Pod) string {
	evs, err := e.CS.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + p.Name + ",type=Warning"})
	if err != nil || len(evs.Items) == 0 {
		return ""
	}
	sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].LastTimestamp.Before(&evs.Items[j].LastTimestamp) })
	ev := evs.Items[len(evs.Items)-1]
	return ev.Reason + ": " + firstLine(ev.Message)
}

// Cleanup deletes what Deploy created and waits, at most timeout, until
// the namespaces are gone. Run it with a fresh context: the test's own may
// be cancelled (Ctrl-C).
func Cleanup(ctx context.Context, e *Env, d *Deployment, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var errs []error
	for _, ns := range d.Namespaces {
		// Pods first, without grace, so the namespace goes quickly.
		_ = e.CS.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}, metav1.ListOptions{})
		err := e.CS.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns, err))
		}
	}
	for _, ns := range d.Namespaces {
		for {
			_, err := e.CS.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if ctx.Err() != nil {
				errs = append(errs, fmt.Errorf("namespace %s still terminating after %s (it goes on its own; label %s)", ns, timeout, LabelTest))
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	return errors.Join(errs...)
}
