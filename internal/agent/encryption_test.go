package agent

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/wireguard"
	"github.com/trellisnet/trellis/internal/wireguard/wgdev"
)

type fakeWGStatus struct {
	st  wgdev.Status
	err error
}

func (f fakeWGStatus) Status(name string) (wgdev.Status, error) {
	if f.err != nil {
		return wgdev.Status{}, f.err
	}
	st := f.st
	st.Name = name
	return st, nil
}

func encryptedConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := &config.Config{NodeName: "n1", Encryption: config.EncryptionWireGuard}
	cfg.ApplyDefaults()
	return cfg
}

func TestEncryptionStatus(t *testing.T) {
	cfg := encryptedConfig(t)
	k2, k3 := mustKey(t).PublicKey(), mustKey(t).PublicKey()
	hs := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	wg := fakeWGStatus{st: wgdev.Status{Engine: config.EngineUserspace, KeyID: "0a1b2c3d", ListenPort: 51871,
		Offloads: wgdev.Offloads{TUNVnetHdr: true, UDPGSO: true},
		Peers: []wgdev.PeerStatus{
			{Node: "n2", PublicKey: k2, KeyID: wireguard.KeyID(k2), Endpoint: netip.MustParseAddrPort("10.0.1.12:51871"),
				AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, LastHandshake: hs, RxBytes: 10, TxBytes: 20},
			{Node: "n3", PublicKey: k3, KeyID: wireguard.KeyID(k3)},
		}}}
	got := encryptionStatus(cfg, wg)
	if got.Mode != "wireguard" || !got.Strict || got.Device != config.DefaultWireGuardDevice || got.Engine != "userspace" ||
		got.KeyID != "0a1b2c3d" || got.ListenPort != 51871 || got.PeersWithHandshake != 1 || got.Error != "" {
		t.Errorf("status %+v", got)
	}
	if strings.Join(got.Offloads, ",") != "tun-vnet-hdr,udp-gso" {
		t.Errorf("offloads %v, want tun-vnet-hdr,udp-gso", got.Offloads)
	}
	if len(got.Peers) != 2 || got.Peers[0].LastHandshake == nil || !got.Peers[0].LastHandshake.Equal(hs) ||
		got.Peers[0].Endpoint != "10.0.1.12:51871" || got.Peers[1].LastHandshake != nil || got.Peers[0].KeyID != wireguard.KeyID(k2) {
		t.Errorf("peers %+v", got.Peers)
	}
	data, _ := json.Marshal(got)
	if strings.Contains(string(data), k2.String()) {
		t.Errorf("status carries a whole key, key ids are enough: %s", data)
	}

	if got := encryptionStatus(cfg, fakeWGStatus{err: errors.New("no such device")}); got.Error == "" || got.Engine != "" {
		t.Errorf("unreadable device: %+v, want the error", got)
	}
	off := &config.Config{}
	off.ApplyDefaults()
	if got := encryptionStatus(off, nil); got.Mode != "none" || got.Strict || got.Device != "" || got.Error != "" {
		t.Errorf("encryption off: %+v", got)
	}
}

func mustKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A peer publishing, changing or withdrawing its key is a change the
// routing controller must see.
func TestPeerKeyChangeIsRelevant(t *testing.T) {
	node := func(key string) *v1.Node {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Annotations: map[string]string{}}}
		if key != "" {
			n.Annotations[wireguard.AnnotationPublicKey] = key
		}
		return n
	}
	a, b := mustKey(t).PublicKey().String(), mustKey(t).PublicKey().String()
	for _, c := range []struct{ from, to string }{{"", a}, {a, b}, {a, ""}} {
		if !relevantChange(node(c.from), node(c.to)) {
			t.Errorf("key %q -> %q not relevant to routing", c.from, c.to)
		}
	}
	if relevantChange(node(a), node(a)) {
		t.Error("unchanged node is relevant")
	}
}

// The key store node setup publishes from is the key file: created once
// (mode 0600), the same key after, a new one on rotation.
func TestKeyFileStore(t *testing.T) {
	cfg := encryptedConfig(t)
	cfg.WireGuard.KeyFile = filepath.Join(t.TempDir(), "state", "wireguard.key")
	ks := keyStore(t.Context(), cfg)
	k1, err := ks.Load()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.WireGuard.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file %v (%v), want mode 0600", fi, err)
	}
	if k, err := ks.Load(); err != nil || k != k1 {
		t.Errorf("second Load = %v (%v), want the same key", k.PublicKey(), err)
	}
	k2, err := ks.Rotate()
	if err != nil || k2 == k1 {
		t.Fatalf("Rotate = %v, want a new key", err)
	}
	if k, err := ks.Load(); err != nil || k != k2 {
		t.Errorf("Load after Rotate = %v (%v), want the rotated key", k.PublicKey(), err)
	}
	off := &config.Config{}
	off.ApplyDefaults()
	if keyStore(t.Context(), off) != nil {
		t.Error("key store with encryption off")
	}
}
