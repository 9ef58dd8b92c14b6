package nodesetup

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	corelisters "k8s.io/client-go/listers/core/v1"
	k8stesting "k8s.io/client-go/testing"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// fakeKeys is a KeyStore in memory.
type fakeKeys struct {
	t       *testing.T
	key     wgtypes.Key
	loadErr error
	rotated int
}

func (k *fakeKeys) Load() (wgtypes.Key, error) {
	if k.loadErr != nil {
		return wgtypes.Key{}, k.loadErr
	}
	if k.key == (wgtypes.Key{}) {
		k.key = k.newKey()
	}
	return k.key, nil
}

func (k *fakeKeys) Rotate() (wgtypes.Key, error) {
	k.rotated++
	k.key = k.newKey()
	return k.key, nil
}

func (k *fakeKeys) newKey() wgtypes.Key {
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		k.t.Fatal(err)
	}
	return key
}

// newEncryptedFixture is newFixture with encryption on and fake keys;
// triggers counts OnKeyRotated calls.
func newEncryptedFixture(t *testing.T, mode config.RoutingMode, annotations map[string]string) (*fixture, *fakeKeys, *int) {
	t.Helper()
	node := testNode("10.244.1.0/24")
	node.Annotations = annotations
	f := newFixture(t, node, mode)
	f.cfg.Encryption = config.EncryptionWireGuard
	keys, triggers := &fakeKeys{t: t}, new(int)
	c, err := New(Config{Agent: f.cfg, NodeAPI: f.client.CoreV1().Nodes(), Nodes: corelisters.NewNodeLister(f.idx),
		Routes: f.routes, Dataplane: f.dp, Underlay: fakeUnderlay{mtu: 1500}, Sysctls: f.sys,
		Keys: keys, OnKeyRotated: func() { *triggers++ }})
	if err != nil {
		t.Fatal(err)
	}
	c.bootID = f.c.bootID
	f.c = c
	return f, keys, triggers
}

// annotationPatches returns the annotation patches sent to the API.
func (f *fixture) annotationPatches(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, a := range f.client.Actions() {
		p, ok := a.(k8stesting.PatchAction)
		if !ok || p.GetSubresource() != "" {
			continue
		}
		var body struct {
			Metadata struct {
				Annotations map[string]any `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(p.GetPatch(), &body); err != nil {
			t.Fatal(err)
		}
		out = append(out, body.Metadata.Annotations)
	}
	return out
}

func (f *fixture) syncAndObserve(t *testing.T) error {
	t.Helper()
	err := f.c.Sync(context.Background())
	if uerr := f.idx.Update(f.apiNode(t)); uerr != nil {
		t.Fatal(uerr)
	}
	return err
}

func TestPublishesPublicKeyAndPodMTUWithEncryption(t *testing.T) {
	f, keys, _ := newEncryptedFixture(t, config.ModeNative, nil)
	if err := f.syncAndObserve(t); err != nil {
		t.Fatal(err)
	}
	n := f.apiNode(t)
	if got, want := n.Annotations[wireguard.AnnotationPublicKey], keys.key.PublicKey().String(); got != want {
		t.Errorf("published key %q, want the key file's public key %q", got, want)
	}
	for k, v := range n.Annotations {
		if strings.Contains(v, keys.key.String()) {
			t.Errorf("annotation %s carries the private key", k)
		}
	}
	st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil || st.MTU != 1440 {
		t.Errorf("pod MTU %v (%v), want 1500 - 60 = 1440", st, err)
	}
	f.client.ClearActions()
	if err := f.syncAndObserve(t); err != nil {
		t.Fatal(err)
	}
	if p := f.annotationPatches(t); len(p) != 0 || keys.rotated != 0 {
		t.Errorf("steady state: patches %v, rotations %d; want none", p, keys.rotated)
	}
}

func TestRotationPublishesNewKeyAndRotatedInOnePatch(t *testing.T) {
	f, keys, triggers := newEncryptedFixture(t, config.ModeAuto, nil)
	if err := f.syncAndObserve(t); err != nil {
		t.Fatal(err)
	}
	old := keys.key.PublicKey()
	n := f.apiNode(t)
	n.Annotations[wireguard.AnnotationRotate] = "2026-12-02T10:00:00Z"
	if _, err := f.client.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.idx.Update(f.apiNode(t)); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	if err := f.syncAndObserve(t); err != nil {
		t.Fatal(err)
	}
	if keys.rotated != 1 || *triggers != 1 {
		t.Errorf("rotations %d, routing triggers %d; want 1 and 1", keys.rotated, *triggers)
	}
	patches := f.annotationPatches(t)
	if len(patches) != 1 || patches[0][wireguard.AnnotationPublicKey] != keys.key.PublicKey().String() ||
		patches[0][wireguard.AnnotationRotated] != "2026-12-02T10:00:00Z" {
		t.Fatalf("patches %v; want one with the new public key and rotated = the request", patches)
	}
	if keys.key.PublicKey() == old {
		t.Error("key unchanged by the rotation")
	}
	// Handled: the next sync neither rotates nor patches.
	f.client.ClearActions()
	if err := f.syncAndObserve(t); err != nil {
		t.Fatal(err)
	}
	if p := f.annotationPatches(t); len(p) != 0 || keys.rotated != 1 {
		t.Errorf("after the rotation: patches %v, rotations %d; want none more", p, keys.rotated)
	}
}

// A rotation whose patch fails is published by the retry, not rotated again.
func TestRotationPatchFailureDoesNotRotateTwice(t *testing.T) {
	f, keys, triggers := newEncryptedFixture(t, config.ModeNative, map[string]string{wireguard.AnnotationRotate: "r1"})
	fail := true
	f.client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fail {
			fail = false
			return true, nil, errors.New("API server away")
		}
		return false, nil, nil
	})
	if err := f.syncAndObserve(t); err == nil {
		t.Fatal("Sync succeeded although the patch failed")
	}
	if err := f.syncAndObserve(t); err != nil {
		t.Fatal(err)
	}
	n := f.apiNode(t)
	if keys.rotated != 1 || *triggers != 1 || n.Annotations[wireguard.AnnotationRotated] != "r1" ||
		n.Annotations[wireguard.AnnotationPublicKey] != keys.key.PublicKey().String() {
		t.Errorf("rotations %d, triggers %d, annotations %v; want one rotation, published with rotated=r1", keys.rotated, *triggers, n.Annotations)
	}
}

func TestKeyFileErrorFailsSyncWithoutPublishing(t *testing.T) {
	f, keys, _ := newEncryptedFixture(t, config.ModeNative, nil)
	keys.loadErr = errors.New("key file /var/lib/trellis/wireguard.key: mode 0644, want 0600")
	err := f.syncAndObserve(t)
	if err == nil || !strings.Contains(err.Error(), "0600") {
		t.Errorf("Sync = %v, want the key file's error", err)
	}
	if _, ok := f.apiNode(t).Annotations[wireguard.AnnotationPublicKey]; ok {
		t.Error("a public key was published without a valid key file")
	}
}

func TestEncryptionOffRemovesPublicKey(t *testing.T) {
	node := testNode("10.244.1.0/24")
	node.Annotations = map[string]string{wireguard.AnnotationPublicKey: "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
		wireguard.AnnotationRotated: "r1"}
	f := newFixture(t, node, config.ModeNative)
	if err := f.syncAndObserve(t); err != nil {
		t.Fatal(err)
	}
	n := f.apiNode(t)
	if _, ok := n.Annotations[wireguard.AnnotationPublicKey]; ok {
		t.Errorf("encryption off: public key still published: %v", n.Annotations)
	}
	if n.Annotations[wireguard.AnnotationRotated] != "r1" {
		t.Errorf("encryption off: rotation bookkeeping touched: %v", n.Annotations)
	}
}

func TestKeysRequiredWithEncryption(t *testing.T) {
	f := newFixture(t, testNode("10.244.1.0/24"), config.ModeNative)
	f.cfg.Encryption = config.EncryptionWireGuard
	if _, err := New(Config{Agent: f.cfg, NodeAPI: f.client.CoreV1().Nodes(), Nodes: corelisters.NewNodeLister(f.idx),
		Routes: f.routes, Dataplane: f.dp, Underlay: fakeUnderlay{mtu: 1500}, Sysctls: f.sys}); err == nil {
		t.Error("New with encryption on and no Keys succeeded")
	}
}

// A rotated key is published only once the device holds it (so a peer's
// handshake with the new key finds the device ready), or after the wait
// bound when the device does not take it.
func TestRotationPublishesOnceTheDeviceHoldsTheKey(t *testing.T) {
	for _, deviceTakesIt := range []bool{true, false} {
		f, keys, _ := newEncryptedFixture(t, config.ModeNative, map[string]string{wireguard.AnnotationRotate: "r1"})
		var mu sync.Mutex
		var device wgtypes.Key
		f.c.onKeyRotated = func() {
			if !deviceTakesIt {
				return
			}
			// The routing controller applies the new key a little later.
			go func() {
				time.Sleep(50 * time.Millisecond)
				mu.Lock()
				device = keys.key.PublicKey()
				mu.Unlock()
			}()
		}
		f.c.deviceKey = func() (wgtypes.Key, error) {
			mu.Lock()
			defer mu.Unlock()
			return device, nil
		}
		f.c.keyWait = 300 * time.Millisecond
		var atPatch wgtypes.Key
		f.client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
			atPatch, _ = f.c.deviceKey()
			return false, nil, nil
		})
		start := time.Now()
		if err := f.syncAndObserve(t); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		pub := f.apiNode(t).Annotations[wireguard.AnnotationPublicKey]
		if pub != keys.key.PublicKey().String() {
			t.Fatalf("published %q, want the rotated key", pub)
		}
		switch {
		case deviceTakesIt && atPatch != keys.key.PublicKey():
			t.Errorf("the new key was published while the device held %v", atPatch)
		case deviceTakesIt && took >= 300*time.Millisecond:
			t.Errorf("sync took %v although the device took the key after 50ms", took)
		case !deviceTakesIt && took < 300*time.Millisecond:
			t.Errorf("published after %v without the device holding the key; want the wait bound first", took)
		}
	}
}
