package agent

import (
	"context"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/wireguard"
	"github.com/trellisnet/trellis/internal/wireguard/wgdev"
)

// wireGuardStatus reads what the WireGuard device holds (wgdev.Manager).
type wireGuardStatus interface {
	Status(name string) (wgdev.Status, error)
}

// setUpEncryption builds the WireGuard manager when encryption is on and
// hands it to the routing dataplane, which programs the device and its
// peers before the routes into it. The returned func closes the manager
// at exit: a userspace device stops, its TUN interface, address and routes
// stay (the strict table keeps dropping what would leave unencrypted), and
// the next agent re-attaches to it; the device is never deleted on stop.
func (d *deps) setUpEncryption(ctx context.Context, cfg *config.Config) (func(), error) {
	if !cfg.EncryptionEnabled() {
		return func() {}, nil
	}
	logger := klog.FromContext(ctx)
	m, err := wgdev.New(wgdev.Options{KeyFile: cfg.WireGuard.KeyFile, Logger: logger})
	if err != nil {
		return nil, err
	}
	d.routes.WireGuard, d.wireGuard = m, m
	return func() {
		if err := m.Close(); err != nil {
			logger.Error(err, "Cannot stop the WireGuard device cleanly; its interface stays for the next agent")
		}
	}, nil
}

// keyFile is the node's WireGuard key file as node setup's KeyStore.
type keyFile struct {
	path   string
	logger klog.Logger
}

var _ nodesetup.KeyStore = keyFile{}

// keyStore returns the key store node setup publishes from (nil with
// encryption off).
func keyStore(ctx context.Context, cfg *config.Config) nodesetup.KeyStore {
	if !cfg.EncryptionEnabled() {
		return nil
	}
	return keyFile{path: cfg.WireGuard.KeyFile, logger: klog.FromContext(ctx).WithName("wireguard")}
}

func (k keyFile) Load() (wgtypes.Key, error) {
	key, created, err := wireguard.LoadOrCreateKey(k.path)
	if created {
		k.logger.Info("Created this node's WireGuard key", "file", k.path, "keyID", wireguard.KeyID(key.PublicKey()))
	}
	return key, err
}

func (k keyFile) Rotate() (wgtypes.Key, error) { return wireguard.RotateKey(k.path) }

// deviceKey returns the public key the WireGuard device holds (node setup
// publishes a rotated key once the device has it); nil with encryption off.
func deviceKey(cfg *config.Config, wg wireGuardStatus) func() (wgtypes.Key, error) {
	if wg == nil || !cfg.EncryptionEnabled() {
		return nil
	}
	return func() (wgtypes.Key, error) {
		st, err := wg.Status(cfg.WireGuard.Device)
		return st.PublicKey, err
	}
}

// encryptionStatus is /v1/status's encryption section: the configuration
// and, when encryption is on, the device's engine, key id and peers.
func encryptionStatus(cfg *config.Config, wg wireGuardStatus) agentapi.Encryption {
	out := agentapi.Encryption{Mode: string(cfg.Encryption), Strict: cfg.EncryptionStrictEnabled()}
	if out.Mode == "" {
		out.Mode = string(config.EncryptionNone)
	}
	if !cfg.EncryptionEnabled() {
		return out
	}
	out.Device = cfg.WireGuard.Device
	if wg == nil {
		out.Error = "no WireGuard manager"
		return out
	}
	st, err := wg.Status(cfg.WireGuard.Device)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Engine, out.KeyID, out.ListenPort = string(st.Engine), st.KeyID, st.ListenPort
	if o := st.Offloads.String(); o != "none" {
		out.Offloads = strings.Split(o, ",")
	}
	for _, p := range st.Peers {
		ep := agentapi.EncryptionPeer{Node: p.Node, KeyID: p.KeyID, RxBytes: p.RxBytes, TxBytes: p.TxBytes}
		if p.Endpoint.IsValid() {
			ep.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			ep.AllowedIPs = append(ep.AllowedIPs, a.String())
		}
		if !p.LastHandshake.IsZero() {
			t := p.LastHandshake.UTC().Truncate(time.Second)
			ep.LastHandshake = &t
			out.PeersWithHandshake++
		}
		out.Peers = append(out.Peers, ep)
	}
	return out
}
