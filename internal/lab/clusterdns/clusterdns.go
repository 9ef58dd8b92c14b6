// Package clusterdns runs the lab's cluster DNS the way real clusters do:
// CoreDNS (built from the pinned source, imported into every node as
// images.CoreDNSImage) as a Deployment behind the kube-dns Service at the
// ClusterIP kubelet gives pods as their nameserver. The objects are the
// embedded coredns.yaml, applied through the API server with server-side
// apply, so deploying again changes nothing.
package clusterdns

import (
	"context"
	_ "embed"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/lab/kube"
)

// Names of the objects in the manifest.
const (
	Namespace  = "kube-system"
	Deployment = "coredns"
	Service    = "kube-dns"
	// Selector selects the CoreDNS pods (the label upstream manifests use).
	Selector = "k8s-app=kube-dns"
)

//go:embed coredns.yaml
var manifest []byte

// Objects decodes the manifest, in apply order.
func Objects() ([]*unstructured.Unstructured, error) { return kube.DecodeManifest(manifest) }

// Applier applies objects through the API server.
type Applier interface {
	Apply(ctx context.Context, objs []*unstructured.Unstructured) error
}

// Deploy applies the manifest with the kube-dns Service at clusterIPs
// (primary family first; see WithClusterIPs) and, with wait, waits until
// every CoreDNS replica is ready and the Deployment reports Available.
func Deploy(ctx context.Context, a Applier, cs kubernetes.Interface, clusterIPs []netip.Addr, wait bool, timeout time.Duration) error {
	objs, err := Objects()
	if err != nil {
		return err
	}
	if err := WithClusterIPs(objs, clusterIPs); err != nil {
		return err
	}
	if err := a.Apply(ctx, objs); err != nil {
		return fmt.Errorf("applying the cluster DNS manifest: %w", err)
	}
	if !wait {
		return nil
	}
	var last Summary
	err = kube.Poll(ctx, time.Second, timeout, func(ctx context.Context) (bool, error) {
		s, err := Describe(ctx, cs)
		last = s
		return err == nil && s.Available && s.Ready == s.Replicas, err
	})
	if err != nil {
		return fmt.Errorf("cluster DNS not available after %s (%s; see `kubectl -n %s describe deploy %s`): %w",
			timeout, last, Namespace, Deployment, err)
	}
	return nil
}

// WithClusterIPs gives the kube-dns Service among objs the addresses ips,
// one per IP family, primary first: a single-stack Service of that family,
// or a dual-stack one (RequireDualStack, both ClusterIPs). The manifest's
// own single address (10.96.0.10) leaves the Service as written.
func WithClusterIPs(objs []*unstructured.Unstructured, ips []netip.Addr) error {
	for _, o := range objs {
		if o.GetKind() != "Service" || o.GetName() != Service {
			continue
		}
		cur, _, _ := unstructured.NestedString(o.Object, "spec", "clusterIP")
		if len(ips) == 0 || (len(ips) == 1 && ips[0].String() == cur) {
			return nil
		}
		var addrs, families []any
		for _, a := range ips {
			addrs = append(addrs, a.String())
			families = append(families, map[bool]string{true: "IPv4", false: "IPv6"}[a.Is4()])
		}
		policy := "SingleStack"
		if len(ips) > 1 {
			policy = "RequireDualStack"
		}
		for field, v := range map[string]any{"clusterIP": addrs[0], "clusterIPs": addrs, "ipFamilies": families, "ipFamilyPolicy": policy} {
			if err := unstructured.SetNestedField(o.Object, v, "spec", field); err != nil {
				return fmt.Errorf("setting the %s Service's %s: %w", Service, field, err)
			}
		}
		return nil
	}
	return fmt.Errorf("the cluster DNS manifest has no Service %s", Service)
}

// Summary is the cluster DNS as the API server sees it.
type Summary struct {
	ClusterIP string
	Image     string
	Replicas  int32
	Ready     int32
	Available bool
	Nodes     []string // nodes with a ready CoreDNS pod, sorted
}

func (s Summary) String() string {
	if s.Image == "" {
		return "not deployed"
	}
	avail := "not available"
	if s.Available {
		avail = "available"
	}
	return fmt.Sprintf("%s/%s %s at %s, %s, %d/%d ready on [%s]", Namespace, Service, s.Image, s.ClusterIP, avail,
		s.Ready, s.Replicas, strings.Join(s.Nodes, " "))
}

// Describe reads the Deployment, the Service and the CoreDNS pods.
func Describe(ctx context.Context, cs kubernetes.Interface) (Summary, error) {
	var s Summary
	d, err := cs.AppsV1().Deployments(Namespace).Get(ctx, Deployment, metav1.GetOptions{})
	if err != nil {
		return s, fmt.Errorf("reading deployment %s/%s: %w", Namespace, Deployment, err)
	}
	if len(d.Spec.Template.Spec.Containers) > 0 {
		s.Image = d.Spec.Template.Spec.Containers[0].Image
	}
	if d.Spec.Replicas != nil {
		s.Replicas = *d.Spec.Replicas
	}
	s.Ready = d.Status.ReadyReplicas
	s.Available = d.Status.ObservedGeneration >= d.Generation && deploymentAvailable(d)
	svc, err := cs.CoreV1().Services(Namespace).Get(ctx, Service, metav1.GetOptions{})
	if err != nil {
		return s, fmt.Errorf("reading service %s/%s: %w", Namespace, Service, err)
	}
	s.ClusterIP = svc.Spec.ClusterIP
	if len(svc.Spec.ClusterIPs) > 1 {
		s.ClusterIP = strings.Join(svc.Spec.ClusterIPs, ",")
	}
	pods, err := ReadyPods(ctx, cs)
	if err != nil {
		return s, err
	}
	for _, p := range pods {
		s.Nodes = append(s.Nodes, p.Spec.NodeName)
	}
	sort.Strings(s.Nodes)
	return s, nil
}

// ReadyPods returns the ready CoreDNS pods.
func ReadyPods(ctx context.Context, cs kubernetes.Interface) ([]corev1.Pod, error) {
	pods, err := cs.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: Selector})
	if err != nil {
		return nil, fmt.Errorf("listing CoreDNS pods: %w", err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if kube.PodReady(&p) && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

func deploymentAvailable(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
