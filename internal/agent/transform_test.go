package agent

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/slim"
)

func TestTrimForCacheKeepsWhatControllersRead(t *testing.T) {
	unavailable := v1.NodeCondition{Type: v1.NodeNetworkUnavailable, Status: v1.ConditionFalse, Reason: "TrellisRouteCreated"}
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", UID: "u1", ResourceVersion: "7",
			Annotations:   map[string]string{routing.AnnotationVTEPMAC: "x", routing.AnnotationNodeIP: "10.0.0.9", "kubeadm.alpha.kubernetes.io/cri-socket": "big"},
			Labels:        map[string]string{"kubernetes.io/hostname": "n"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: v1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}, Taints: []v1.Taint{{Key: "t"}}},
		Status: v1.NodeStatus{
			Addresses:  []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}},
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}, unavailable},
			Images:     []v1.ContainerImage{{Names: []string{"big"}, SizeBytes: 1}},
			NodeInfo:   v1.NodeSystemInfo{KernelVersion: "6.18"},
		},
	}
	out, err := trimForCache(n.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	want := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", UID: "u1", ResourceVersion: "7", Labels: n.Labels,
			Annotations: map[string]string{routing.AnnotationVTEPMAC: "x", routing.AnnotationNodeIP: "10.0.0.9"}},
		Spec:   v1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}},
		Status: v1.NodeStatus{Addresses: n.Status.Addresses, Conditions: []v1.NodeCondition{unavailable}},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("trimmed node\n got %+v\nwant %+v", out, want)
	}
	if got := routing.PeerFromNode(out.(*v1.Node)); !reflect.DeepEqual(got, routing.PeerFromNode(n)) {
		t.Errorf("routing peer changed by trimming: %+v vs %+v", got, routing.PeerFromNode(n))
	}
	// Idempotent: the informer may transform an object more than once.
	again, err := trimForCache(out)
	if err != nil || !reflect.DeepEqual(again, out) {
		t.Errorf("second trim changed the node: %+v (%v)", again, err)
	}

	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", ResourceVersion: "3", Labels: map[string]string{"a": "b"},
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}}}
	if got, _ := trimForCache(ns); !reflect.DeepEqual(got, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", ResourceVersion: "3", Labels: ns.Labels}}) {
		t.Errorf("trimmed namespace %+v", got)
	}
	// Tombstones pass through untouched.
	tomb := cache.DeletedFinalStateUnknown{Key: "n", Obj: n}
	if got, err := trimForCache(tomb); err != nil || !reflect.DeepEqual(got, tomb) {
		t.Errorf("tombstone: %v %v", got, err)
	}
}

// The policy compiled from trimmed pods, namespaces and policies equals the
// one compiled from the full objects, over a randomised world with named
// ports, host-network pods, finished pods and reused addresses.
func TestTrimmedObjectsCompileToTheSamePolicy(t *testing.T) {
	withGroups := 0
	for seed := int64(1); seed <= 30; seed++ {
		pods, nss, nps := policyWorld(rand.New(rand.NewSource(seed)))
		var ifaces []podlink.Interface
		for i, p := range pods {
			if p.Spec.NodeName == "n1" && p.Status.PodIP != "" {
				ifaces = append(ifaces, podlink.Interface{Index: i + 10, Name: fmt.Sprintf("trl%011x", i),
					Addrs: []netip.Addr{netip.MustParseAddr(p.Status.PodIP)}})
			}
		}
		full := policy.Compile(policy.SnapshotFromAPI("n1", pods, nss, nps, ifaces))
		// As the agent's informers hold them: slim pods of shared strings
		// and label sets, UIDs only on n1.
		tf := newTransform("n1")
		var cached []*slim.Pod
		for _, p := range pods {
			o, err := tf.apply(p.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			cached = append(cached, o.(*slim.Pod))
		}
		trimmed := policy.Compile(policy.SnapshotFromCache("n1", cached, trimAll(t, nss), trimAll(t, nps), ifaces))
		if !reflect.DeepEqual(full, trimmed) {
			t.Fatalf("seed %d: trimming changed the compiled policy\nfull    %+v\ntrimmed %+v", seed, full, trimmed)
		}
		if len(full.Groups) > 0 {
			withGroups++
		}
	}
	if withGroups < 15 {
		t.Fatalf("only %d of 30 worlds compiled to group chains; the comparison proves little", withGroups)
	}
}

func trimAll[T any](t *testing.T, in []T) []T {
	t.Helper()
	out := make([]T, len(in))
	for i, o := range in {
		got, err := trimForCache(o)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = got.(T)
	}
	return out
}

// policyWorld is 3 namespaces, ~40 pods over 2 nodes and a few policies
// using pod and namespace selectors, numeric and named ports.
func policyWorld(r *rand.Rand) ([]*v1.Pod, []*v1.Namespace, []*networkingv1.NetworkPolicy) {
	pick := func(xs ...string) string { return xs[r.Intn(len(xs))] }
	always := v1.ContainerRestartPolicyAlways
	var nss []*v1.Namespace
	for _, n := range []string{"x", "y", "z"} {
		nss = append(nss, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n,
			Labels:      map[string]string{"kubernetes.io/metadata.name": n, "team": pick("a", "b")},
			Annotations: map[string]string{"note": "dropped"}}})
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var pods []*v1.Pod
	for i := 0; i < 40; i++ {
		p := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: pick("x", "y", "z"), Name: fmt.Sprintf("p%d", i), UID: "uid",
				ResourceVersion: fmt.Sprint(i), Labels: map[string]string{"app": pick("web", "db", "cache")},
				Annotations:       map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"},
				CreationTimestamp: metav1.NewTime(base.Add(time.Duration(r.Intn(5)) * time.Second)),
				OwnerReferences:   []metav1.OwnerReference{{Name: "rs"}}},
			Spec: v1.PodSpec{NodeName: pick("n1", "n2"), HostNetwork: r.Intn(8) == 0,
				InitContainers: []v1.Container{{Name: "init", Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 1}}},
					{Name: "sidecar", RestartPolicy: &always, Image: "proxy",
						Ports: []v1.ContainerPort{{Name: "proxy", ContainerPort: int32(9090 + r.Intn(2)), HostPort: 1}}}},
				Containers: []v1.Container{
					{Name: "main", Image: "agnhost", Args: []string{"netexec"}, Env: []v1.EnvVar{{Name: "A", Value: "b"}},
						Ports: []v1.ContainerPort{{Name: pick("http", "web"), ContainerPort: int32(80 + r.Intn(3)), Protocol: v1.ProtocolTCP, HostPort: 1}}},
					{Name: "side", Image: "pause"},
					{Name: "dns", Ports: []v1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: v1.ProtocolUDP}}},
				}},
			Status: v1.PodStatus{Phase: v1.PodPhase(pick("Running", "Running", "Pending", "Succeeded", "Failed")),
				HostIP: "10.0.0.1", Conditions: []v1.PodCondition{{Type: v1.PodReady}}},
		}
		if p.Status.Phase != v1.PodPending || r.Intn(2) == 0 {
			ip := fmt.Sprintf("10.244.%d.%d", map[string]int{"n1": 1, "n2": 2}[p.Spec.NodeName], 10+r.Intn(25)) // some reuse
			p.Status.PodIP, p.Status.PodIPs = ip, []v1.PodIP{{IP: ip}}
		}
		if r.Intn(6) == 0 {
			p.DeletionTimestamp = &metav1.Time{Time: base}
		}
		pods = append(pods, p)
	}
	port := func() *intstr.IntOrString {
		v := intstr.FromString(pick("http", "web", "dns", "proxy"))
		if r.Intn(2) == 0 {
			v = intstr.FromInt32(80)
		}
		return &v
	}
	var nps []*networkingv1.NetworkPolicy
	for i := 0; i < 4; i++ {
		nps = append(nps, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: pick("x", "y", "z"), Name: fmt.Sprintf("np%d", i),
				Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": pick("web", "db")}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": pick("web", "cache")}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: port()}},
				}},
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": pick("a", "b")}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: port()}},
				}},
			},
		})
	}
	return pods, nss, nps
}

// A Service keeps what bgp.Service reads, and only that.
func TestTrimServiceForBGP(t *testing.T) {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web", ResourceVersion: "4", Labels: map[string]string{"bgp": "yes"},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "big"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: v1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, ExternalIPs: []string{"198.51.100.7"},
			Ports: []v1.ServicePort{{Port: 80}}, Selector: map[string]string{"app": "web"}, Type: v1.ServiceTypeLoadBalancer},
		Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: "203.0.113.5", Ports: []v1.PortStatus{{Port: 80}}}, {Hostname: "lb.example"}}}},
	}
	got, err := trimForCache(s.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	want := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web", ResourceVersion: "4", Labels: s.Labels},
		Spec:       v1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, ExternalIPs: []string{"198.51.100.7"}},
		Status:     v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: "203.0.113.5"}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("trimmed service\n got %+v\nwant %+v", got, want)
	}
	sec := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "trellis-bgp-passwords", Annotations: map[string]string{"a": "b"}},
		Data: map[string][]byte{"tor": []byte("pw")}}
	if got, _ := trimForCache(sec); !reflect.DeepEqual(got, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "trellis-bgp-passwords"}, Data: sec.Data}) {
		t.Errorf("trimmed secret %+v", got)
	}
}
