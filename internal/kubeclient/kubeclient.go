// Package kubeclient is the agent's Kubernetes API access, limited to what
// it uses: REST clients for core/v1, networking/v1 and Trellis's own
// bgp.trellis.dev/v1alpha1 over a scheme that holds only those groups,
// list/watch sources for the kinds the agent watches, the Node patch, the
// BGPNodeStatus apply (bgp.go) and the event sink.
//
// It exists to keep the agent small. client-go's clientset
// (k8s.io/client-go/kubernetes), its informer factory and every typed
// client package under it — k8s.io/client-go/kubernetes/typed/core/v1
// included — import k8s.io/client-go/kubernetes/scheme, whose init
// registers every built-in API group (56 k8s.io/api packages, with their
// codecs and deep copies). Linking it made the agent's executable 33 MB
// and, with the kernel mapping its text in 2 MiB folios, ~31 MiB of the
// agent's resident set (docs/benchmarks.md, "Agent RSS").
package kubeclient

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	bgpv1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// NewScheme returns a scheme with core/v1, networking/v1,
// bgp.trellis.dev/v1alpha1 and the unversioned meta types (Status,
// options) registered, as k8s.io/client-go/kubernetes/scheme does for
// every group.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	if err := corev1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("register core/v1: %w", err)
	}
	if err := networkingv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("register networking/v1: %w", err)
	}
	if err := bgpv1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("register %s: %w", bgpv1alpha1.SchemeGroupVersion, err)
	}
	return s, nil
}

// Client talks to the API server for the agent.
type Client struct {
	// Scheme knows core/v1, networking/v1 and bgp.trellis.dev/v1alpha1
	// (for event references).
	Scheme     *runtime.Scheme
	core       rest.Interface
	networking rest.Interface
	// bgp speaks JSON: custom resources have no protobuf encoding.
	bgp rest.Interface
}

// New returns a client for rc (which is not modified). Both REST clients
// share one HTTP client, so one connection pool.
func New(rc *rest.Config) (*Client, error) {
	s, err := NewScheme()
	if err != nil {
		return nil, err
	}
	codecs := serializer.NewCodecFactory(s).WithoutConversion()
	httpClient, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("HTTP client for the API server: %w", err)
	}
	restFor := func(gv schema.GroupVersion, apiPath string) (rest.Interface, error) {
		c := rest.CopyConfig(rc)
		c.GroupVersion = &gv
		c.APIPath = apiPath
		c.NegotiatedSerializer = codecs
		// Protobuf, as Kubernetes' own components use for built-in types:
		// decoding a list or watch event allocates a fraction of what
		// JSON does (JSON remains accepted, e.g. for error bodies).
		c.ContentType = runtime.ContentTypeProtobuf
		c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		if gv.Group == bgpv1alpha1.GroupName {
			c.ContentType, c.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
		}
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		r, err := rest.RESTClientForConfigAndClient(c, httpClient)
		if err != nil {
			return nil, fmt.Errorf("REST client for %s: %w", gv, err)
		}
		return r, nil
	}
	core, err := restFor(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, err
	}
	networking, err := restFor(networkingv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	bgp, err := restFor(bgpv1alpha1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	return &Client{Scheme: s, core: core, networking: networking, bgp: bgp}, nil
}

// ListWatches are the sources of the agent's informers.
type ListWatches struct {
	Nodes, Pods, Namespaces, NetworkPolicies cache.ListerWatcher
}

// ListWatches returns list/watch sources over all namespaces.
func (c *Client) ListWatches() ListWatches {
	lw := func(r rest.Interface, resource string) cache.ListerWatcher {
		return cache.NewListWatchFromClient(r, resource, metav1.NamespaceAll, fields.Everything())
	}
	return ListWatches{
		Nodes:           lw(c.core, "nodes"),
		Pods:            lw(c.core, "pods"),
		Namespaces:      lw(c.core, "namespaces"),
		NetworkPolicies: lw(c.networking, "networkpolicies"),
	}
}

// Nodes returns the Node patcher (the method set of client-go's typed
// NodeInterface that the agent uses, so a fake clientset's Nodes() also
// satisfies the interfaces built on it).
func (c *Client) Nodes() *NodeClient { return &NodeClient{c: c.core} }

// NodeClient patches Nodes.
type NodeClient struct{ c rest.Interface }

// Patch applies a patch to the named Node (or to its subresource, e.g.
// "status") and returns the patched Node.
func (n *NodeClient) Patch(ctx context.Context, name string, pt types.PatchType, data []byte,
	opts metav1.PatchOptions, subresources ...string) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := n.c.Patch(pt).Resource("nodes").Name(name).SubResource(subresources...).
		VersionedParams(&opts, metav1.ParameterCodec).Body(data).Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// EventSink returns the sink for an event broadcaster: core/v1 Events
// written to the event's own namespace.
func (c *Client) EventSink() record.EventSink { return eventSink{c: c.core} }

type eventSink struct{ c rest.Interface }

var _ record.EventSink = eventSink{}

func (s eventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.c.Post().NamespaceIfScoped(e.Namespace, e.Namespace != "").Resource("events").
		Body(e).Do(context.Background()).Into(out)
	return out, err
}

func (s eventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.c.Put().NamespaceIfScoped(e.Namespace, e.Namespace != "").Resource("events").Name(e.Name).
		Body(e).Do(context.Background()).Into(out)
	return out, err
}

func (s eventSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.c.Patch(types.StrategicMergePatchType).NamespaceIfScoped(e.Namespace, e.Namespace != "").
		Resource("events").Name(e.Name).Body(data).Do(context.Background()).Into(out)
	return out, err
}
