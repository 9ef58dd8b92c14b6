package nodesetup

import (
	"context"
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/wireguard"
)

// KeyStore holds this node's WireGuard private key (the key file; the
// agent backs it with wireguard.LoadOrCreateKey and wireguard.RotateKey).
// The private key stays on the node: only its public half is published.
type KeyStore interface {
	// Load returns the private key, creating the file on first use. A file
	// that is not a valid key is an error, never replaced silently.
	Load() (wgtypes.Key, error)
	// Rotate replaces the key with a new one and returns it.
	Rotate() (wgtypes.Key, error)
}

// keyAnnotations adds to patch what this node must publish about its
// WireGuard key: with encryption on, the public key of the key file and,
// when trellis.dev/wireguard-rotate holds a value not handled yet, a new
// key (the routing controller is triggered so the device takes it) with
// trellis.dev/wireguard-rotated set to that value, in the same patch; with
// encryption off, the removal of the public key.
//
// After a rotation the new key is published only once the device holds it
// (or after deviceKeyWait): a peer that learns the new key replaces its
// peer entry and starts a handshake at its next packet, which only a device
// already holding the new key can answer. Published the other way round,
// that handshake would be lost and the peer would retry only after
// WireGuard's 5 s rekey timeout.
func (c *Controller) keyAnnotations(ctx context.Context, node *v1.Node, patch map[string]any) error {
	if !c.cfg.EncryptionEnabled() {
		if _, ok := node.Annotations[wireguard.AnnotationPublicKey]; ok {
			patch[wireguard.AnnotationPublicKey] = nil
		}
		return nil
	}
	logger := klog.FromContext(ctx).WithName("nodesetup")
	key, err := c.keys.Load()
	if err != nil {
		return fmt.Errorf("WireGuard key: %w", err)
	}
	request := node.Annotations[wireguard.AnnotationRotate]
	if request != "" && request != node.Annotations[wireguard.AnnotationRotated] {
		// A rotation whose patch failed is not rotated again when retried.
		if c.rotatedFor != request {
			old := key.PublicKey()
			if key, err = c.keys.Rotate(); err != nil {
				return fmt.Errorf("rotate WireGuard key (requested %q): %w", request, err)
			}
			c.rotatedFor = request
			logger.Info("Rotated the WireGuard key", "request", request,
				"oldKeyID", wireguard.KeyID(old), "keyID", wireguard.KeyID(key.PublicKey()))
			if c.onKeyRotated != nil {
				c.onKeyRotated()
			}
			c.waitForDeviceKey(ctx, key.PublicKey())
		}
		patch[wireguard.AnnotationRotated] = request
	}
	if pub := key.PublicKey().String(); node.Annotations[wireguard.AnnotationPublicKey] != pub {
		patch[wireguard.AnnotationPublicKey] = pub
	}
	return nil
}

// deviceKeyWait bounds how long a rotation waits for the device to take
// the new key before publishing it anyway (the device takes it at the
// routing controller's next sync).
const deviceKeyWait = 5 * time.Second

// waitForDeviceKey waits until the WireGuard device holds the key pub
// (Config.DeviceKey), at most c.keyWait.
func (c *Controller) waitForDeviceKey(ctx context.Context, pub wgtypes.Key) {
	if c.deviceKey == nil {
		return
	}
	logger := klog.FromContext(ctx).WithName("nodesetup")
	start := time.Now()
	for {
		if k, err := c.deviceKey(); err == nil && k == pub {
			logger.V(2).Info("WireGuard device holds the new key", "keyID", wireguard.KeyID(pub), "after", time.Since(start))
			return
		}
		if time.Since(start) >= c.keyWait || ctx.Err() != nil {
			logger.Info("Publishing the new WireGuard key before the device holds it; peers may need a rekey timeout (5 s) to reconnect",
				"keyID", wireguard.KeyID(pub), "waited", time.Since(start))
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}
