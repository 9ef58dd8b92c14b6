package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellisnet/trellis/internal/wireguard"
)

// RotateOptions tune RotateKey.
type RotateOptions struct {
	// Timeout bounds the wait for the node's agent to publish its new key.
	Timeout time.Duration
	// Poll is how often the Node is read while waiting (0: 500ms).
	Poll time.Duration
	// Now stamps the request (nil: time.Now).
	Now func() time.Time
}

// RotateResult is `trellisctl encryption rotate -o json|yaml`.
type RotateResult struct {
	Node string `json:"node"`
	// Request is the value written to trellis.dev/wireguard-rotate.
	Request string `json:"request"`
	// OldKeyID and NewKeyID name the public keys before and after
	// (wireguard.KeyID; "" when the node had published none).
	OldKeyID string `json:"oldKeyID"`
	NewKeyID string `json:"newKeyID"`
	// Seconds is how long the agent took to publish the new key.
	Seconds float64 `json:"seconds"`
}

// RotateKey asks node's agent for a new WireGuard key pair: it sets the
// Node annotation trellis.dev/wireguard-rotate to a fresh timestamp and
// waits until the agent reports it handled that request
// (trellis.dev/wireguard-rotated equals it) and published a public key
// other than the one before. An unknown node, or a cluster where no node
// publishes a key (encryption off), is bad input (exit 2); no answer within
// the timeout is exit 3.
func (o *Options) RotateKey(ctx context.Context, node string, ro RotateOptions) (RotateResult, error) {
	res := RotateResult{Node: node}
	cs, err := o.Clientset()
	if err != nil {
		return res, err
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return res, Usage("node %q not found", node)
	} else if err != nil {
		return res, fmt.Errorf("reading node %s: %w", node, err)
	}
	if err := o.checkEncryptionOn(ctx, n); err != nil {
		return res, err
	}
	old, hadKey := wireguard.PublicKeyFromNode(n)
	if hadKey {
		res.OldKeyID = wireguard.KeyID(old)
	}
	now := time.Now
	if ro.Now != nil {
		now = ro.Now
	}
	start := now()
	res.Request = start.UTC().Format(time.RFC3339Nano)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{wireguard.AnnotationRotate: res.Request}}})
	if err != nil {
		return res, err
	}
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return res, fmt.Errorf("requesting the rotation on node %s: %w", node, err)
	}
	poll := ro.Poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	wctx, cancel := context.WithTimeout(ctx, ro.Timeout)
	defer cancel()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	state := "no answer yet"
	for {
		n, err := cs.CoreV1().Nodes().Get(wctx, node, metav1.GetOptions{})
		switch {
		case err == nil:
			var done bool
			done, state = rotated(n, res.Request, old, hadKey)
			if done {
				k, _ := wireguard.PublicKeyFromNode(n)
				res.NewKeyID = wireguard.KeyID(k)
				res.Seconds = time.Since(start).Seconds()
				return res, nil
			}
		case apierrors.IsNotFound(err):
			return res, Usage("node %q was deleted while waiting for its rotation", node)
		case wctx.Err() == nil:
			state = "reading the node: " + err.Error()
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			return res, &ExitCodeError{Code: ExitError, Err: fmt.Errorf(
				"node %s did not publish a new key within %s (%s); is its agent running? %s=%s stays set, the agent handles it when it can",
				node, ro.Timeout, state, wireguard.AnnotationRotate, res.Request)}
		case <-tick.C:
		}
	}
}

// rotated reports whether n shows the rotation request handled, and if
// not, what it shows instead.
func rotated(n *corev1.Node, request string, old wgtypes.Key, hadKey bool) (bool, string) {
	if got := n.Annotations[wireguard.AnnotationRotated]; got != request {
		return false, fmt.Sprintf("%s is %q", wireguard.AnnotationRotated, got)
	}
	k, ok := wireguard.PublicKeyFromNode(n)
	switch {
	case !ok:
		return false, "the rotation is acknowledged but the node publishes no valid public key"
	case hadKey && k == old:
		return false, "the rotation is acknowledged but the public key did not change"
	}
	return true, ""
}

// checkEncryptionOn is bad input unless some node (n or another)
// publishes a WireGuard public key: without one, encryption is off.
func (o *Options) checkEncryptionOn(ctx context.Context, n *corev1.Node) error {
	if _, ok := n.Annotations[wireguard.AnnotationPublicKey]; ok {
		return nil
	}
	cs, err := o.Clientset()
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	for i := range nodes.Items {
		if _, ok := nodes.Items[i].Annotations[wireguard.AnnotationPublicKey]; ok {
			return nil
		}
	}
	return Usage("encryption is not on in this cluster: no node publishes %s (set encryption: wireguard, docs/encryption.md)",
		wireguard.AnnotationPublicKey)
}

func encryptionCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "encryption",
		Short: "Manage WireGuard encryption between nodes (docs/encryption.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Usage("encryption needs a subcommand: rotate")
		},
	}
	cmd.AddCommand(rotateCommand(o))
	return cmd
}

func rotateCommand(o *Options) *cobra.Command {
	var (
		ro     RotateOptions
		output string
	)
	cmd := &cobra.Command{
		Use:   "rotate NODE",
		Short: "Give NODE a new WireGuard key pair, live, and wait until it is published",
		Long: `Sets the Node annotation trellis.dev/wireguard-rotate to a fresh timestamp.
The node's agent writes a new private key, puts it on its WireGuard device and
publishes the new public key with trellis.dev/wireguard-rotated set to that
timestamp; every peer's agent then updates the node's peer entry. rotate waits
for that publication and prints the old and the new key id.

Exit codes: 0 rotated; 2 unknown node, or encryption off in the cluster;
3 no new key within --timeout (the request stays; the agent handles it when
it runs).`,
		Example: `  trellisctl encryption rotate node-a
  trellisctl encryption rotate node-a --timeout 2m -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ValidateOutput(output, OutputJSON, OutputYAML); err != nil {
				return err
			}
			if ro.Timeout <= 0 {
				return Usage("--timeout %s: must be positive", ro.Timeout)
			}
			res, err := o.RotateKey(cmd.Context(), args[0], ro)
			if err != nil {
				return err
			}
			if output != OutputTable {
				return PrintStructured(o.Out, output, res)
			}
			oldID := res.OldKeyID
			if oldID == "" {
				oldID = "(none)"
			}
			fmt.Fprintf(o.Out, "node %s: key %s → %s (published after %.1fs)\n", res.Node, oldID, res.NewKeyID, res.Seconds)
			return nil
		},
	}
	cmd.Flags().DurationVar(&ro.Timeout, "timeout", time.Minute, "how long to wait for the node to publish its new key")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	return cmd
}
