package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/wireguard"
)

func pubKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func wgNode(name string, ann map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
}

// fakeAgent plays node's agent: when the rotate annotation holds a value
// it has not handled, it publishes a fresh key (newKeys; or keeps the old
// one) and acknowledges the request, as node setup does. It stops with ctx.
// It returns the keys it published.
func fakeAgent(ctx context.Context, t *testing.T, cs kubernetes.Interface, node string, newKeys bool) <-chan wgtypes.Key {
	published := make(chan wgtypes.Key, 10)
	go func() {
		for ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				continue
			}
			req := n.Annotations[wireguard.AnnotationRotate]
			if req == "" || req == n.Annotations[wireguard.AnnotationRotated] {
				continue
			}
			k, _ := wireguard.PublicKeyFromNode(n)
			if newKeys {
				k = pubKey(t)
				n.Annotations[wireguard.AnnotationPublicKey] = k.String()
			}
			n.Annotations[wireguard.AnnotationRotated] = req
			if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				if ctx.Err() == nil {
					t.Errorf("fake agent: %v", err)
				}
				continue
			}
			published <- k
		}
	}()
	return published
}

func runCtl(t *testing.T, cs kubernetes.Interface, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	root, o := NewRootCommand("v9", &out, &errOut)
	o.SetClients(&rest.Config{}, cs)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	code := ExitCode(err)
	if err != nil {
		errOut.WriteString("trellisctl: " + err.Error() + "\n")
		if code == ExitError && isUsageError(err) {
			code = ExitUsage // as Run maps cobra's own errors
		}
	}
	return code, out.String(), errOut.String()
}

func TestEncryptionRotatePublishesNewKey(t *testing.T) {
	oldKey := pubKey(t)
	cs := fake.NewClientset(
		wgNode("a", map[string]string{wireguard.AnnotationPublicKey: oldKey.String()}),
		wgNode("b", map[string]string{wireguard.AnnotationPublicKey: pubKey(t).String()}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := fakeAgent(ctx, t, cs, "a", true)

	code, out, errOut := runCtl(t, cs, "encryption", "rotate", "a", "--timeout", "10s")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	newKey := <-published
	want := "node a: key " + wireguard.KeyID(oldKey) + " → " + wireguard.KeyID(newKey)
	if !strings.HasPrefix(out, want) {
		t.Errorf("output %q, want it to start with %q", out, want)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req := n.Annotations[wireguard.AnnotationRotate]
	if _, err := time.Parse(time.RFC3339Nano, req); err != nil {
		t.Errorf("rotate annotation %q is not an RFC 3339 timestamp: %v", req, err)
	}
	b, err := cs.CoreV1().Nodes().Get(ctx, "b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Annotations[wireguard.AnnotationRotate]; ok {
		t.Error("rotate touched another node")
	}

	// A second rotation writes a new request value and reports it as JSON.
	code, out, errOut = runCtl(t, cs, "encryption", "rotate", "a", "--timeout", "10s", "-o", "json")
	if code != ExitOK {
		t.Fatalf("second rotation: exit %d, stderr %q", code, errOut)
	}
	var res RotateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("json output %q: %v", out, err)
	}
	third := <-published
	if res.Request == req || res.Node != "a" || res.OldKeyID != wireguard.KeyID(newKey) || res.NewKeyID != wireguard.KeyID(third) {
		t.Errorf("second rotation result %+v: want a new request value (first %q) and key %s → %s",
			res, req, wireguard.KeyID(newKey), wireguard.KeyID(third))
	}
}

func TestEncryptionRotateWaitsForAChangedKey(t *testing.T) {
	oldKey := pubKey(t)
	cs := fake.NewClientset(wgNode("a", map[string]string{wireguard.AnnotationPublicKey: oldKey.String()}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fakeAgent(ctx, t, cs, "a", false) // acknowledges, keeps the key
	o := &Options{Namespace: "kube-system"}
	o.SetClients(&rest.Config{}, cs)
	_, err := o.RotateKey(ctx, "a", RotateOptions{Timeout: 300 * time.Millisecond, Poll: 10 * time.Millisecond})
	if ExitCode(err) != ExitError || !strings.Contains(err.Error(), "did not change") {
		t.Fatalf("RotateKey with an unchanged key = %v (exit %d), want exit 3 saying the key did not change", err, ExitCode(err))
	}
}

func TestEncryptionRotateTimeout(t *testing.T) {
	cs := fake.NewClientset(wgNode("a", map[string]string{wireguard.AnnotationPublicKey: pubKey(t).String()}))
	start := time.Now()
	code, _, errOut := runCtl(t, cs, "encryption", "rotate", "a", "--timeout", "200ms")
	if code != ExitError || !strings.Contains(errOut, "did not publish a new key within 200ms") {
		t.Fatalf("no agent: exit %d, stderr %q; want exit 3 naming the timeout", code, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeout of 200ms took %s", d)
	}
}

func TestEncryptionRotateBadInput(t *testing.T) {
	withKey := fake.NewClientset(wgNode("a", map[string]string{wireguard.AnnotationPublicKey: pubKey(t).String()}),
		wgNode("fresh", nil))
	noEncryption := fake.NewClientset(wgNode("a", nil), wgNode("b", map[string]string{"other": "x"}))
	for _, tc := range []struct {
		cs   kubernetes.Interface
		args []string
		want int
		msg  string
	}{
		{withKey, []string{"encryption", "rotate", "nope"}, ExitUsage, `node "nope" not found`},
		{noEncryption, []string{"encryption", "rotate", "a"}, ExitUsage, "encryption is not on"},
		{withKey, []string{"encryption", "rotate"}, ExitUsage, "accepts 1 arg"},
		{withKey, []string{"encryption", "rotate", "a", "--timeout", "0s"}, ExitUsage, "must be positive"},
		{withKey, []string{"encryption", "rotate", "a", "-o", "wide"}, ExitUsage, "unknown output format"},
		{withKey, []string{"encryption"}, ExitUsage, "needs a subcommand"},
		// A node of an encrypted cluster that has no key yet may be
		// rotated: the wait ends with its first key (here: no agent).
		{withKey, []string{"encryption", "rotate", "fresh", "--timeout", "100ms"}, ExitError, "did not publish"},
	} {
		code, _, stderr := runCtl(t, tc.cs, tc.args...)
		if code != tc.want || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d with %q", tc.args, code, stderr, tc.want, tc.msg)
		}
	}
	n, err := noEncryption.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Annotations[wireguard.AnnotationRotate]; ok {
		t.Error("rotate wrote its request into a cluster without encryption")
	}
}
