package kubeclient

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	bgpv1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// FieldManager is the agent's field manager in server-side apply.
const FieldManager = "trellis-agent"

// BGP resources (plural names) the agent uses; Served requires them all.
const (
	ResourceBGPConfigurations = "bgpconfigurations"
	ResourceBGPPeers          = "bgppeers"
	ResourceBGPAdvertisements = "bgpadvertisements"
	ResourceBGPNodeStatuses   = "bgpnodestatuses"
)

// BGPListWatches are the sources of the BGP controller's informers.
type BGPListWatches struct {
	// Configurations, Peers and Advertisements: every object (cluster-scoped).
	Configurations, Peers, Advertisements cache.ListerWatcher
	// Services in every namespace (core/v1, protobuf).
	Services cache.ListerWatcher
	// Passwords is the Secret trellis-bgp-passwords alone, in the agent's
	// namespace: a list and watch with the field selector
	// metadata.name=trellis-bgp-passwords, which is what RBAC (a Role with
	// resourceNames) permits; a list of all Secrets would be refused.
	Passwords cache.ListerWatcher
}

// BGPListWatches returns the BGP controller's sources; namespace is the
// agent's own, where the passwords Secret lives.
func (c *Client) BGPListWatches(namespace string) BGPListWatches {
	all := func(r rest.Interface, resource string) cache.ListerWatcher {
		return cache.NewListWatchFromClient(r, resource, metav1.NamespaceAll, fields.Everything())
	}
	return BGPListWatches{
		Configurations: all(c.bgp, ResourceBGPConfigurations),
		Peers:          all(c.bgp, ResourceBGPPeers),
		Advertisements: all(c.bgp, ResourceBGPAdvertisements),
		Services:       all(c.core, "services"),
		Passwords: cache.NewListWatchFromClient(c.core, "secrets", namespace,
			fields.OneTermEqualSelector("metadata.name", bgpv1alpha1.PasswordSecretName)),
	}
}

// BGP returns the client of the BGP API group.
func (c *Client) BGP() *BGPClient { return &BGPClient{c: c.bgp} }

// BGPClient checks whether the BGP API is served and applies the node's
// BGPNodeStatus.
type BGPClient struct{ c rest.Interface }

// Served reports whether the API server serves bgp.trellis.dev/v1alpha1
// with every resource the agent uses (the CRDs are installed and
// established). A group that is not there is (false, nil); an error is
// an API server that could not say.
func (b *BGPClient) Served(ctx context.Context) (bool, error) {
	raw, err := b.c.Get().AbsPath("/apis", bgpv1alpha1.GroupName, bgpv1alpha1.SchemeGroupVersion.Version).Do(ctx).Raw()
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", bgpv1alpha1.SchemeGroupVersion, err)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal(raw, &list); err != nil {
		return false, fmt.Errorf("decode the discovery of %s: %w", bgpv1alpha1.SchemeGroupVersion, err)
	}
	var names []string
	for _, r := range list.APIResources {
		names = append(names, r.Name)
	}
	for _, want := range []string{ResourceBGPConfigurations, ResourceBGPPeers, ResourceBGPAdvertisements, ResourceBGPNodeStatuses} {
		if !slices.Contains(names, want) {
			return false, nil
		}
	}
	return true, nil
}

// ApplyNodeStatus server-side applies st (field manager trellis-agent,
// forcing ownership of its fields) and returns the object the API server
// holds. st names the node; its TypeMeta is filled in here, and a zero
// ObservedAt becomes now (a zero metav1.Time encodes as null, which the
// CRD's schema refuses).
func (b *BGPClient) ApplyNodeStatus(ctx context.Context, st *bgpv1alpha1.BGPNodeStatus) (*bgpv1alpha1.BGPNodeStatus, error) {
	in := st.DeepCopy()
	in.TypeMeta = metav1.TypeMeta{APIVersion: bgpv1alpha1.SchemeGroupVersion.String(), Kind: "BGPNodeStatus"}
	if in.Status.ObservedAt.IsZero() {
		in.Status.ObservedAt = metav1.Now()
	}
	in.ResourceVersion, in.ManagedFields = "", nil
	data, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("encode BGPNodeStatus %s: %w", in.Name, err)
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force}
	out := &bgpv1alpha1.BGPNodeStatus{}
	err = b.c.Patch(types.ApplyPatchType).Resource(ResourceBGPNodeStatuses).Name(in.Name).
		VersionedParams(&opts, metav1.ParameterCodec).Body(data).Do(ctx).Into(out)
	if err != nil {
		return nil, fmt.Errorf("apply BGPNodeStatus %s: %w", in.Name, err)
	}
	return out, nil
}
