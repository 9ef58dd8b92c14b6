package kubeclient

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	bgpv1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// request is what the fake API server saw.
type request struct {
	method, path, query, contentType, accept, body string
}

// fakeAPI answers every request with reply (encoded as protobuf when the
// client accepts it, as a real API server does) and records the requests.
type fakeAPI struct {
	t     *testing.T
	mu    sync.Mutex
	seen  []request
	reply func(r *http.Request) runtime.Object
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.seen = append(f.seen, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Accept"), string(body)})
	f.mu.Unlock()
	obj := f.reply(r)
	s, err := NewScheme()
	if err != nil {
		f.t.Error(err)
		return
	}
	codecs := serializer.NewCodecFactory(s)
	mediaType := runtime.ContentTypeJSON
	if strings.HasPrefix(r.Header.Get("Accept"), runtime.ContentTypeProtobuf) {
		mediaType = runtime.ContentTypeProtobuf
	}
	info, ok := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), mediaType)
	if !ok {
		f.t.Errorf("no serializer for %s", mediaType)
		return
	}
	gv := corev1.SchemeGroupVersion
	if strings.HasPrefix(r.URL.Path, "/apis/networking.k8s.io/") {
		gv = networkingv1.SchemeGroupVersion
	}
	var buf bytes.Buffer
	if err := codecs.EncoderForVersion(info.Serializer, gv).Encode(obj, &buf); err != nil {
		f.t.Errorf("encode %T: %v", obj, err)
		return
	}
	w.Header().Set("Content-Type", mediaType)
	_, _ = w.Write(buf.Bytes())
}

func (f *fakeAPI) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.seen...)
}

func newClient(t *testing.T, reply func(r *http.Request) runtime.Object) (*Client, *fakeAPI) {
	t.Helper()
	api := &fakeAPI{t: t, reply: reply}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := New(&rest.Config{Host: srv.URL, UserAgent: "trellis-agent/test"})
	if err != nil {
		t.Fatal(err)
	}
	return c, api
}

func TestListsDecodeProtobufForBothGroups(t *testing.T) {
	c, api := newClient(t, func(r *http.Request) runtime.Object {
		switch r.URL.Path {
		case "/api/v1/pods":
			return &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "5"}, Items: []corev1.Pod{
				{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{"app": "web"}},
					Status: corev1.PodStatus{PodIP: "10.244.1.5"}}}}
		case "/apis/networking.k8s.io/v1/networkpolicies":
			return &networkingv1.NetworkPolicyList{Items: []networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny"}}}}
		}
		t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		return &metav1.Status{}
	})
	lws := c.ListWatches()
	ctx := context.Background()
	obj, err := cache.ToListerWatcherWithContext(lws.Pods).ListWithContext(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	pods, ok := obj.(*corev1.PodList)
	if !ok || len(pods.Items) != 1 || pods.Items[0].Labels["app"] != "web" || pods.Items[0].Status.PodIP != "10.244.1.5" || pods.ResourceVersion != "5" {
		t.Errorf("pods decoded as %T %+v", obj, obj)
	}
	obj, err = cache.ToListerWatcherWithContext(lws.NetworkPolicies).ListWithContext(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nps, ok := obj.(*networkingv1.NetworkPolicyList); !ok || len(nps.Items) != 1 || nps.Items[0].Name != "deny" {
		t.Errorf("networkpolicies decoded as %T %+v", obj, obj)
	}
	reqs := api.requests()
	if len(reqs) != 2 {
		t.Fatalf("requests %+v", reqs)
	}
	if !strings.HasPrefix(reqs[0].accept, runtime.ContentTypeProtobuf) || !strings.Contains(reqs[0].accept, runtime.ContentTypeJSON) {
		t.Errorf("Accept %q: want protobuf first, JSON as fallback", reqs[0].accept)
	}
	if reqs[0].query != "resourceVersion=0" {
		t.Errorf("list options encoded as %q", reqs[0].query)
	}
}

func TestNodePatchAndEventSink(t *testing.T) {
	c, api := newClient(t, func(r *http.Request) runtime.Object {
		if strings.HasSuffix(r.URL.Path, "/events") || strings.Contains(r.URL.Path, "/events/") {
			return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "e1", ResourceVersion: "9"}}
		}
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "2"}}
	})
	n, err := c.Nodes().Patch(context.Background(), "n1", types.StrategicMergePatchType, []byte(`{"status":{}}`), metav1.PatchOptions{}, "status")
	if err != nil || n.Name != "n1" || n.ResourceVersion != "2" {
		t.Fatalf("patch: %+v, %v", n, err)
	}
	if _, err := c.Nodes().Patch(context.Background(), "n1", types.MergePatchType, []byte(`{"metadata":{}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	sink := c.EventSink()
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "e1"}, Reason: "PeerNotOnSameSubnet",
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "n1"}, FirstTimestamp: metav1.NewTime(time.Unix(1, 0))}
	got, err := sink.Create(ev)
	if err != nil || got.ResourceVersion != "9" {
		t.Fatalf("create event: %+v, %v", got, err)
	}
	if _, err := sink.Patch(ev, []byte(`{"count":2}`)); err != nil {
		t.Fatal(err)
	}
	want := []request{
		{method: "PATCH", path: "/api/v1/nodes/n1/status", contentType: string(types.StrategicMergePatchType), body: `{"status":{}}`},
		{method: "PATCH", path: "/api/v1/nodes/n1", contentType: string(types.MergePatchType), body: `{"metadata":{}}`},
		{method: "POST", path: "/api/v1/namespaces/default/events", contentType: runtime.ContentTypeProtobuf},
		{method: "PATCH", path: "/api/v1/namespaces/default/events/e1", contentType: string(types.StrategicMergePatchType), body: `{"count":2}`},
	}
	reqs := api.requests()
	if len(reqs) != len(want) {
		t.Fatalf("requests %+v", reqs)
	}
	for i, w := range want {
		r := reqs[i]
		if r.method != w.method || r.path != w.path || r.contentType != w.contentType || (w.body != "" && r.body != w.body) {
			t.Errorf("request %d: %s %s %q %q, want %s %s %q %q", i, r.method, r.path, r.contentType, r.body, w.method, w.path, w.contentType, w.body)
		}
	}
	// The event went out as protobuf and decodes back to what was sent.
	s, _ := NewScheme()
	obj, _, err := serializer.NewCodecFactory(s).UniversalDeserializer().Decode([]byte(reqs[2].body), nil, nil)
	if e, ok := obj.(*corev1.Event); err != nil || !ok || e.Reason != "PeerNotOnSameSubnet" || e.InvolvedObject.Name != "n1" {
		t.Errorf("event body decoded as %+v, %v", obj, err)
	}
}

func TestSchemeHoldsOnlyCoreNetworkingAndBGP(t *testing.T) {
	s, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	for _, gv := range []schema.GroupVersion{corev1.SchemeGroupVersion, networkingv1.SchemeGroupVersion, bgpv1alpha1.SchemeGroupVersion} {
		if !s.IsVersionRegistered(gv) {
			t.Errorf("%s not registered", gv)
		}
	}
	for _, gv := range []schema.GroupVersion{{Group: "apps", Version: "v1"}, {Group: "discovery.k8s.io", Version: "v1"}} {
		if s.IsVersionRegistered(gv) {
			t.Errorf("%s registered", gv)
		}
	}
	if gvks, _, err := s.ObjectKinds(&corev1.Node{}); err != nil || len(gvks) != 1 || gvks[0].Kind != "Node" {
		t.Errorf("Node kinds %v, %v (event references need them)", gvks, err)
	}
}
