//go:build kernel

package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/internal/wireguard"
	"github.com/trellisnet/trellis/internal/wireguard/wgdev"
)

// The whole agent with encryption on, against a fake API server and a real
// kernel namespace running the userspace WireGuard engine: it publishes
// its public key, routes a keyed peer into the device and a keyless one by
// the mode's route, follows a peer's new key, rotates its own key on
// request (device and annotation agree, rotated = the request), and leaves
// the device in place when it stops.
func TestKernelAgentEncryption(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	dir := t.TempDir()
	strict := false // the strict table is not this test's subject
	cfg := &config.Config{NodeName: "node1", RoutingMode: config.ModeNative, CNIPluginSource: "/proc/self/exe",
		CNIBinDir: dir + "/bin", CNIConfDir: dir + "/net.d", NodeStateFile: dir + "/node-state.json",
		MetricsBindAddress: "127.0.0.1:0", Encryption: config.EncryptionWireGuard, EncryptionStrict: &strict,
		WireGuard: config.WireGuard{Device: fmt.Sprintf("wga%d", os.Getpid()%100000), Engine: config.EngineUserspace,
			KeyFile: filepath.Join(dir, "state", "wireguard.key")}}
	cfg.ApplyDefaults()
	cfg.MinSyncInterval.Duration = 50 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	wg, err := wgdev.New(wgdev.Options{KeyFile: cfg.WireGuard.KeyFile, NetnsPath: n.NS.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = wg.RemoveDevice(context.Background(), cfg.WireGuard.Device)
		_ = wg.Close()
	})
	dp := &netlinkprog.Programmer{Handle: n.Handle, NetnsPath: n.NS.Path(), WireGuard: wg}
	k2, k2b := mustKey(t).PublicKey(), mustKey(t).PublicKey()
	node2 := node("node2", "10.0.1.12", "10.244.2.0/24")
	node2.Annotations = map[string]string{wireguard.AnnotationPublicKey: k2.String()}
	client := fake.NewClientset(node("node1", "10.0.1.11", "10.244.1.0/24"), node2, node("node3", "10.0.1.13", "10.244.3.0/24"))
	// What the device held when the rotation's patch went out.
	var atRotationPatch atomic.Value
	client.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if p, ok := a.(k8stesting.PatchAction); ok && strings.Contains(string(p.GetPatch()), wireguard.AnnotationRotated) {
			if st, err := wg.Status(cfg.WireGuard.Device); err == nil {
				atRotationPatch.Store(st.PublicKey.String())
			}
		}
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, deps{api: fakeAPI(t, client), routes: dp, wireGuard: wg, sysctls: memSysctls{}})
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent returned %v", err)
			}
		}
	}
	defer stop()
	self := func() map[string]string {
		n, err := client.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Annotations
	}
	device := func() wgdev.Status {
		st, err := wg.Status(cfg.WireGuard.Device)
		if err != nil {
			return wgdev.Status{}
		}
		return st
	}
	eventually(t, 10*time.Second, "keyed node2 through the tunnel, keyless node3 native", func() bool {
		return routeTo(t, dp, "10.244.2.0/24") == "<nil> "+cfg.WireGuard.Device && routeTo(t, dp, "10.244.3.0/24") == "10.0.1.13 ul0"
	})
	eventually(t, 5*time.Second, "public key published", func() bool { return self()[wireguard.AnnotationPublicKey] != "" })
	published := self()[wireguard.AnnotationPublicKey]
	if st := device(); published == "" || st.PublicKey.String() != published || len(st.Peers) != 1 || st.Peers[0].PublicKey != k2 {
		t.Fatalf("published key %q, device key %s, peers %+v; want the device's key published and node2 as its only peer", published, st.PublicKey, st.Peers)
	}

	// node2 rotates: the device follows.
	n2, _ := client.CoreV1().Nodes().Get(ctx, "node2", metav1.GetOptions{})
	n2.Annotations[wireguard.AnnotationPublicKey] = k2b.String()
	if _, err := client.CoreV1().Nodes().Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "peer node2's new key on the device", func() bool {
		st := device()
		return len(st.Peers) == 1 && st.Peers[0].PublicKey == k2b
	})

	// This node rotates on request.
	n1, _ := client.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
	n1.Annotations[wireguard.AnnotationRotate] = "2026-12-02T10:30:00Z"
	if _, err := client.CoreV1().Nodes().Update(ctx, n1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 5*time.Second, "rotation handled", func() bool {
		a := self()
		return a[wireguard.AnnotationRotated] == "2026-12-02T10:30:00Z" && a[wireguard.AnnotationPublicKey] != published &&
			device().PublicKey.String() == a[wireguard.AnnotationPublicKey]
	})
	t.Logf("rotation: new key published and on the device after %v", took)
	if got := atRotationPatch.Load(); got != self()[wireguard.AnnotationPublicKey] {
		t.Errorf("the device held %v when the new key was published, want the new key (peers' handshakes with it would be lost)", got)
	}
	key, err := wireguard.LoadKey(cfg.WireGuard.KeyFile)
	if err != nil || key.PublicKey().String() != self()[wireguard.AnnotationPublicKey] {
		t.Errorf("key file %v (%v) does not hold the published key", key.PublicKey(), err)
	}

	// Stop: the device and the routes into it stay.
	stop()
	if _, err := n.Handle.LinkByName(cfg.WireGuard.Device); err != nil {
		t.Errorf("stopping the agent removed the WireGuard device: %v", err)
	}
	if routeTo(t, dp, "10.244.2.0/24") == "" {
		t.Error("stopping the agent removed the route into the device")
	}
}
