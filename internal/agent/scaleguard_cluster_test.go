package agent

import (
	"context"
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing"
)

// scaleCluster is a simulated cluster as an API server would list it:
// Nodes, Pods, Namespaces and NetworkPolicies with the fields kubelet,
// the scheduler and kubectl write (images, conditions, container specs,
// managed fields), which the agent's informer transform must drop. Node 0
// is this node; its pods have interfaces.
type scaleCluster struct {
	nodes      v1.NodeList
	pods       v1.PodList
	namespaces v1.NamespaceList
	policies   networkingv1.NetworkPolicyList
	local      []podlink.Interface
}

const scaleNamespaces = 100

// Node i's underlay address: even nodes share this node's subnet (native
// routes), odd ones are on another (VXLAN), as in the auto routing mode.
func scaleNodeIP(i int) netip.Addr {
	if i%2 == 0 {
		return netip.AddrFrom4([4]byte{172, 20, byte((i/2 + 10) >> 8), byte(i/2 + 10)})
	}
	return netip.AddrFrom4([4]byte{172, 21, byte((i/2 + 10) >> 8), byte(i/2 + 10)})
}

// scaleUnderlay is this node's (node 0's) uplink.
var scaleUnderlay = routing.Underlay{Device: "eth0", Prefix: netip.PrefixFrom(scaleNodeIP(0), 22), MTU: 1500,
	Connected: []netip.Prefix{netip.MustParsePrefix("172.20.0.0/22")}}

func newScaleCluster(nodes, pods, policies int) *scaleCluster {
	c := &scaleCluster{}
	for i := range nodes {
		c.nodes.Items = append(c.nodes.Items, scaleNode(i))
	}
	for i := range scaleNamespaces {
		name := fmt.Sprintf("ns%02d", i)
		c.namespaces.Items = append(c.namespaces.Items, v1.Namespace{
			ObjectMeta: scaleMeta("", name, i, map[string]string{"kubernetes.io/metadata.name": name, "team": fmt.Sprintf("t%d", i%10)}),
			Spec:       v1.NamespaceSpec{Finalizers: []v1.FinalizerName{v1.FinalizerKubernetes}},
			Status:     v1.NamespaceStatus{Phase: v1.NamespaceActive}})
	}
	for i := range pods {
		p := scalePod(i, nodes)
		c.pods.Items = append(c.pods.Items, p)
		if p.Spec.NodeName == c.nodes.Items[0].Name {
			ip := netip.MustParseAddr(p.Status.PodIP)
			c.local = append(c.local, podlink.Interface{Index: 100 + len(c.local), Name: fmt.Sprintf("trl%011x", i),
				Group: podlink.GroupForNamespace(p.Namespace), Addrs: []netip.Addr{ip},
				Alias: podlink.Alias{Network: "trellis", ContainerID: fmt.Sprintf("%064x", i), IfName: "eth0",
					PodNamespace: p.Namespace, PodName: p.Name, PodUID: string(p.UID)}})
		}
	}
	for i := range policies {
		c.policies.Items = append(c.policies.Items, scalePolicy(i))
	}
	return c
}

func scaleMeta(ns, name string, i int, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels,
		UID:               types.UID(fmt.Sprintf("%08x-0000-4000-8000-%012x", len(name), i)),
		ResourceVersion:   fmt.Sprint(1000 + i),
		CreationTimestamp: metav1.Unix(1_800_000_000+int64(i), 0),
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply,
			APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:labels":{".":{}}},"f:spec":{}}`)}},
	}
}

func scaleNode(i int) v1.Node {
	name := fmt.Sprintf("scale-n%04d", i)
	m := scaleMeta("", name, i, map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
		"kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "m6i.large", "topology.kubernetes.io/zone": fmt.Sprintf("z%d", i%3)})
	m.Annotations = map[string]string{routing.AnnotationVTEPMAC: fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&255, i>>8&255, i&255),
		"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
	cidr := fmt.Sprintf("10.%d.%d.0/24", i>>8, i&255)
	n := v1.Node{ObjectMeta: m, Spec: v1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}, ProviderID: "lab://" + name},
		Status: v1.NodeStatus{
			Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: scaleNodeIP(i).String()}, {Type: v1.NodeHostName, Address: name}},
			Capacity:  v1.ResourceList{v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("8Gi"), v1.ResourcePods: resource.MustParse("110")},
			NodeInfo:  v1.NodeSystemInfo{KernelVersion: "6.12.0", OSImage: "Debian GNU/Linux 12", ContainerRuntimeVersion: "containerd://2.1.0", KubeletVersion: "v1.37.2"},
		}}
	n.Status.Allocatable = n.Status.Capacity
	for _, t := range []v1.NodeConditionType{v1.NodeMemoryPressure, v1.NodeDiskPressure, v1.NodePIDPressure, v1.NodeReady, v1.NodeNetworkUnavailable} {
		n.Status.Conditions = append(n.Status.Conditions, v1.NodeCondition{Type: t, Status: v1.ConditionFalse,
			Reason: "KubeletHasSufficient" + string(t), Message: "kubelet has sufficient " + string(t)})
	}
	for j := range 8 {
		n.Status.Images = append(n.Status.Images, v1.ContainerImage{SizeBytes: 1 << 20,
			Names: []string{fmt.Sprintf("registry.example/app%d@sha256:%064x", j, j), fmt.Sprintf("registry.example/app%d:v1", j)}})
	}
	return n
}

// scalePod i runs on node i mod nodes, in namespace i mod 100, with one of
// 20 app labels and 3 tiers and a named port.
func scalePod(i, nodes int) v1.Pod {
	node := i % nodes
	ns := fmt.Sprintf("ns%02d", i%scaleNamespaces)
	app := fmt.Sprintf("app%d", (i*7)%20)
	m := scaleMeta(ns, fmt.Sprintf("%s-%08x", app, i), i, map[string]string{"app": app, "tier": fmt.Sprintf("tier%d", i%3),
		"pod-template-hash": fmt.Sprintf("%010x", i%97)})
	m.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-12-01T00:00:00Z"}
	m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-rs", UID: "rs"}}
	ip := netip.AddrFrom4([4]byte{10, byte(node >> 8), byte(node), byte(2 + i/nodes)})
	return v1.Pod{ObjectMeta: m,
		Spec: v1.PodSpec{NodeName: fmt.Sprintf("scale-n%04d", node), ServiceAccountName: "default",
			Containers: []v1.Container{{Name: "main", Image: "registry.example/" + app + ":v1",
				Args:  []string{"serve", "--port=8080"},
				Env:   []v1.EnvVar{{Name: "APP", Value: app}, {Name: "LOG_LEVEL", Value: "info"}},
				Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: v1.ProtocolTCP}},
				Resources: v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("10m"),
					v1.ResourceMemory: resource.MustParse("32Mi")}},
				VolumeMounts: []v1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}}},
			Volumes: []v1.Volume{{Name: "kube-api-access"}}},
		Status: v1.PodStatus{Phase: v1.PodRunning, HostIP: scaleNodeIP(node).String(), PodIP: ip.String(), PodIPs: []v1.PodIP{{IP: ip.String()}},
			Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue}, {Type: v1.PodScheduled, Status: v1.ConditionTrue}},
			ContainerStatuses: []v1.ContainerStatus{{Name: "main", Ready: true, Image: "registry.example/" + app + ":v1",
				ImageID: fmt.Sprintf("registry.example/%s@sha256:%064x", app, i%20), ContainerID: fmt.Sprintf("containerd://%064x", i)}}},
	}
}

// scalePolicy i isolates one app of namespace i mod 100: ingress from a tier
// or from a team's namespaces on the named port, egress to 10/8 except one
// node's pods.
func scalePolicy(i int) networkingv1.NetworkPolicy {
	tcp, udp := v1.ProtocolTCP, v1.ProtocolUDP
	http, dns := intstr.FromString("http"), intstr.FromInt32(53)
	return networkingv1.NetworkPolicy{ObjectMeta: scaleMeta(fmt.Sprintf("ns%02d", i%scaleNamespaces), fmt.Sprintf("np%d", i), i, nil),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (i*3)%20)}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("tier%d", i%3)}}},
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}, {Protocol: &udp, Port: &dns}},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8",
					Except: []string{fmt.Sprintf("10.%d.%d.0/24", (i%1000)>>8, (i%1000)&255)}}}},
			}},
		}}
}

// listWatches serves the cluster to the agent's informers: every list
// returns a fresh deep copy (as if decoded from the wire), and watches
// stay open without events until the informers stop.
func (c *scaleCluster) listWatches() kubeclient.ListWatches {
	return kubeclient.ListWatches{
		Nodes:           memSource{list: func() runtime.Object { return c.nodes.DeepCopy() }},
		Pods:            memSource{list: func() runtime.Object { return c.pods.DeepCopy() }},
		Namespaces:      memSource{list: func() runtime.Object { return c.namespaces.DeepCopy() }},
		NetworkPolicies: memSource{list: func() runtime.Object { return c.policies.DeepCopy() }},
	}
}

// memSource is an in-memory list/watch source. It lists only (no
// watch-list streaming), like a client-go fake clientset.
type memSource struct{ list func() runtime.Object }

var _ cache.ListerWatcherWithContext = memSource{}

func (s memSource) ListWithContext(context.Context, metav1.ListOptions) (runtime.Object, error) {
	return s.list(), nil
}

func (s memSource) WatchWithContext(context.Context, metav1.ListOptions) (watch.Interface, error) {
	return watch.NewFake(), nil
}

func (s memSource) List(o metav1.ListOptions) (runtime.Object, error) {
	return s.ListWithContext(context.Background(), o)
}

func (s memSource) Watch(o metav1.ListOptions) (watch.Interface, error) {
	return s.WatchWithContext(context.Background(), o)
}

func (memSource) IsWatchListSemanticsUnSupported() bool { return true }
