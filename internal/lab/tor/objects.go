package tor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	bgpv1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// SubnetLabel is the label the lab puts on every node with --bgp: the
// number of its underlay subnet (1, 2, ...). Each subnet's BGPPeer selects
// its nodes by it, because the ToR has one address per subnet.
const SubnetLabel = "trellis.dev/lab-subnet"

// Names of the objects the lab creates.
const (
	AdvertisementName = "lab"
	peerPrefix        = "tor-"
)

// PeerName is the name of subnet index's (0-based) BGPPeer to the ToR.
func PeerName(index int) string { return peerPrefix + strconv.Itoa(index+1) }

// CRDDir is where the BGP CRDs are under the deploy directory.
func CRDDir(deployDir string) string { return filepath.Join(deployDir, "helm", "trellis", "crds") }

// NodeLabels are the labels the lab puts on node n.
func NodeLabels(n topology.Host) map[string]string {
	return map[string]string{SubnetLabel: strconv.Itoa(n.Subnet + 1)}
}

// Objects are the BGP objects that peer every node with the ToR (pure):
//
//   - BGPConfiguration "default": every node in AS 64512, internal peering
//     as --bgp-peering (the reflector is node1, cluster ID its address),
//     graceful restart on with --bgp-restart-time.
//   - BGPPeer "tor-N" per subnet N: the nodes labelled with subnet N peer
//     with the ToR's address on that subnet, AS 65000. Every node shares AS
//     64512, so a node learning another node's pod CIDR back from the ToR
//     sees its own AS in the path: allowOwnAS 1 accepts it (one ASN for the
//     cluster keeps the fabric's configuration to one neighbour range per
//     subnet, as with one rack per subnet). BFD intervals match the ToR's,
//     BFD itself off: a BFD session ends with the agent's process, so BFD
//     would withdraw a node whose agent merely restarts, which graceful
//     restart is there to prevent. Turn it on per BGPPeer to trade that for
//     sub-second detection of a dead link.
//   - BGPAdvertisement "lab": every node's pod CIDRs and its Services'
//     external and LoadBalancer addresses.
func Objects(t topology.Topology) ([]*unstructured.Unstructured, error) {
	if !t.Options.BGP {
		return nil, fmt.Errorf("the lab was planned without --bgp")
	}
	if len(t.Nodes) == 0 {
		return nil, fmt.Errorf("the lab has no nodes")
	}
	enabled := true
	cfg := &bgpv1.BGPConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: bgpv1.ConfigurationName},
		Spec: bgpv1.BGPConfigurationSpec{
			ASN:             topology.NodeASN,
			InternalPeering: bgpv1.InternalPeering(t.Options.BGPPeeringOrDefault()),
			RouteReflectors: &bgpv1.RouteReflectors{
				NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelHostname: t.Nodes[0].Name}},
				ClusterID:    t.Nodes[0].Addr.String(),
			},
			GracefulRestart: &bgpv1.GracefulRestart{Enabled: &enabled, RestartTimeSeconds: int32(t.Options.BGPRestartTime)},
		},
	}
	objs := []kindObject{{"BGPConfiguration", cfg}}
	for _, s := range t.Subnets {
		objs = append(objs, kindObject{"BGPPeer", &bgpv1.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: PeerName(s.Index)},
			Spec: bgpv1.BGPPeerSpec{
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{SubnetLabel: strconv.Itoa(s.Index + 1)}},
				PeerAddress:  s.Gateway.String(),
				PeerASN:      topology.ToRASN,
				AllowOwnAS:   1,
				BFD: &bgpv1.BFD{Enabled: false, MinRxMilliseconds: BFDIntervalMs, MinTxMilliseconds: BFDIntervalMs,
					Multiplier: BFDMultiplier},
			},
		}})
	}
	objs = append(objs, kindObject{"BGPAdvertisement", &bgpv1.BGPAdvertisement{
		ObjectMeta: metav1.ObjectMeta{Name: AdvertisementName},
		Spec: bgpv1.BGPAdvertisementSpec{
			PodCIDR:  true,
			Services: &bgpv1.ServiceAdvertisement{ExternalIPs: true, LoadBalancerIPs: true},
		},
	}})
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		u, err := toUnstructured(o.kind, o.obj)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

type kindObject struct {
	kind string
	obj  runtime.Object
}

// toUnstructured converts a typed BGP object for server-side apply: its
// kind set, no status, no creation timestamp.
func toUnstructured(kind string, o runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, fmt.Errorf("converting a %s: %w", kind, err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(bgpv1.SchemeGroupVersion.WithKind(kind))
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return u, nil
}

// LoadCRDs reads the BGP CRDs from dir (sorted by file name).
func LoadCRDs(dir string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no BGP CRDs in %s", dir)
	}
	sort.Strings(files)
	var out []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		objs, err := kube.DecodeManifest(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// LabelNodes puts NodeLabels on every node of t (a merge patch with the
// admin's credentials).
func LabelNodes(ctx context.Context, cs kubernetes.Interface, t topology.Topology) error {
	for _, n := range t.Nodes {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": NodeLabels(n)}})
		if err != nil {
			return err
		}
		if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("labelling node %s: %w", n.Name, err)
		}
	}
	return nil
}

// Apply labels the nodes by subnet, applies the BGP CRDs from crdDir and
// then Objects(t), with server-side apply (applying again changes nothing).
func Apply(ctx context.Context, cs kubernetes.Interface, a *kube.Applier, t topology.Topology, crdDir string) error {
	if err := LabelNodes(ctx, cs, t); err != nil {
		return err
	}
	crds, err := LoadCRDs(crdDir)
	if err != nil {
		return err
	}
	objs, err := Objects(t)
	if err != nil {
		return err
	}
	if err := a.Apply(ctx, crds); err != nil {
		return fmt.Errorf("applying the BGP CRDs: %w", err)
	}
	if err := a.Apply(ctx, objs); err != nil {
		return fmt.Errorf("applying the lab's BGP objects: %w", err)
	}
	return nil
}
