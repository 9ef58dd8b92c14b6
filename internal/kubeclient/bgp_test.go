package kubeclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	bgpv1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// jsonAPI answers with JSON documents by path (404 otherwise) and records
// the requests.
type jsonAPI struct {
	mu      sync.Mutex
	seen    []request
	replies map[string]any
}

func (f *jsonAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.seen = append(f.seen, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Accept"), string(body)})
	reply, ok := f.replies[r.URL.Path]
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound})
		return
	}
	_ = json.NewEncoder(w).Encode(reply)
}

func newJSONClient(t *testing.T, replies map[string]any) (*Client, *jsonAPI) {
	t.Helper()
	api := &jsonAPI{replies: replies}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c, api
}

const bgpPath = "/apis/bgp.trellis.dev/v1alpha1"

func resources(names ...string) *metav1.APIResourceList {
	l := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: "bgp.trellis.dev/v1alpha1"}
	for _, n := range names {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: n})
	}
	return l
}

// Served: the group with all four resources; a missing group (CRDs not
// installed) or a missing resource is "not served", not an error.
func TestBGPServed(t *testing.T) {
	for _, c := range []struct {
		name    string
		replies map[string]any
		want    bool
	}{
		{"all", map[string]any{bgpPath: resources("bgpconfigurations", "bgppeers", "bgpadvertisements", "bgpnodestatuses")}, true},
		{"no group", map[string]any{}, false},
		{"one missing", map[string]any{bgpPath: resources("bgpconfigurations", "bgppeers", "bgpadvertisements")}, false},
	} {
		cl, _ := newJSONClient(t, c.replies)
		got, err := cl.BGP().Served(context.Background())
		if err != nil || got != c.want {
			t.Errorf("%s: Served = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

// The BGP kinds are listed as JSON into the v1alpha1 types; the passwords
// Secret is listed in the agent's namespace with the name field selector
// (what RBAC's resourceNames permits).
func TestBGPListWatches(t *testing.T) {
	peers := bgpv1alpha1.BGPPeerList{TypeMeta: metav1.TypeMeta{Kind: "BGPPeerList", APIVersion: "bgp.trellis.dev/v1alpha1"},
		Items: []bgpv1alpha1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: bgpv1alpha1.BGPPeerSpec{PeerAddress: "10.0.0.1", PeerASN: 65000}}}}
	secrets := corev1.SecretList{TypeMeta: metav1.TypeMeta{Kind: "SecretList", APIVersion: "v1"},
		Items: []corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Namespace: "trellis", Name: "trellis-bgp-passwords"}, Data: map[string][]byte{"tor": []byte("s3cret")}}}}
	cl, api := newJSONClient(t, map[string]any{
		bgpPath + "/bgppeers":                peers,
		"/api/v1/namespaces/trellis/secrets": secrets,
		bgpPath + "/bgpconfigurations":       bgpv1alpha1.BGPConfigurationList{TypeMeta: metav1.TypeMeta{Kind: "BGPConfigurationList", APIVersion: "bgp.trellis.dev/v1alpha1"}},
		"/api/v1/services":                   corev1.ServiceList{TypeMeta: metav1.TypeMeta{Kind: "ServiceList", APIVersion: "v1"}},
		bgpPath + "/bgpadvertisements":       bgpv1alpha1.BGPAdvertisementList{TypeMeta: metav1.TypeMeta{Kind: "BGPAdvertisementList", APIVersion: "bgp.trellis.dev/v1alpha1"}},
	})
	lws := cl.BGPListWatches("trellis")
	ctx := context.Background()
	list := func(lw cache.ListerWatcher) any {
		t.Helper()
		obj, err := cache.ToListerWatcherWithContext(lw).ListWithContext(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return obj
	}
	if got, ok := list(lws.Peers).(*bgpv1alpha1.BGPPeerList); !ok || len(got.Items) != 1 || got.Items[0].Spec.PeerASN != 65000 {
		t.Errorf("peers decoded as %+v", got)
	}
	if got, ok := list(lws.Passwords).(*corev1.SecretList); !ok || len(got.Items) != 1 || string(got.Items[0].Data["tor"]) != "s3cret" {
		t.Errorf("secrets decoded as %+v", got)
	}
	for _, lw := range []cache.ListerWatcher{lws.Configurations, lws.Advertisements, lws.Services} {
		list(lw)
	}
	reqs := api.requests()
	if reqs[0].accept != "application/json" {
		t.Errorf("BGP list Accept %q, want JSON only", reqs[0].accept)
	}
	q, _ := url.ParseQuery(reqs[1].query)
	if reqs[1].path != "/api/v1/namespaces/trellis/secrets" || q.Get("fieldSelector") != "metadata.name=trellis-bgp-passwords" {
		t.Errorf("secret list %s?%s, want the one Secret by field selector in the agent's namespace", reqs[1].path, reqs[1].query)
	}
	if !strings.HasPrefix(reqs[4].accept, "application/vnd.kubernetes.protobuf") {
		t.Errorf("services Accept %q, want protobuf", reqs[4].accept)
	}
}

func (f *jsonAPI) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.seen...)
}

// The node status is server-side applied: PATCH with the apply content
// type, field manager trellis-agent, force, a body naming its apiVersion
// and kind.
func TestApplyNodeStatus(t *testing.T) {
	st := &bgpv1alpha1.BGPNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "7"},
		Status: bgpv1alpha1.NodeStatus{ASN: 64512, Configured: 1, Peers: []bgpv1alpha1.PeerStatus{{Peer: "tor", Address: "10.0.0.1", ASN: 65000, State: "Established"}}}}
	back := st.DeepCopy()
	back.TypeMeta = metav1.TypeMeta{Kind: "BGPNodeStatus", APIVersion: "bgp.trellis.dev/v1alpha1"}
	back.ResourceVersion = "8"
	cl, api := newJSONClient(t, map[string]any{bgpPath + "/bgpnodestatuses/n1": back})
	got, err := cl.BGP().ApplyNodeStatus(context.Background(), st)
	if err != nil || got.ResourceVersion != "8" || got.Status.Peers[0].Peer != "tor" {
		t.Fatalf("apply: %+v, %v", got, err)
	}
	r := api.requests()[0]
	q, _ := url.ParseQuery(r.query)
	if r.method != http.MethodPatch || r.contentType != string(types.ApplyPatchType) || q.Get("fieldManager") != "trellis-agent" || q.Get("force") != "true" {
		t.Errorf("request %s %s?%s %s", r.method, r.path, r.query, r.contentType)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatal(err)
	}
	meta, _ := body["metadata"].(map[string]any)
	if body["apiVersion"] != "bgp.trellis.dev/v1alpha1" || body["kind"] != "BGPNodeStatus" || meta["name"] != "n1" || meta["resourceVersion"] != nil {
		t.Errorf("body %s", r.body)
	}
	// A zero observedAt would encode as null, which the CRD refuses.
	if status, _ := body["status"].(map[string]any); status["observedAt"] == nil {
		t.Errorf("body without observedAt: %s", r.body)
	}
	if st.Kind != "" || st.ResourceVersion != "7" {
		t.Errorf("the caller's object was modified: %+v", st.ObjectMeta)
	}
}
