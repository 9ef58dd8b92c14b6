// Package agentapi is the agent's local control API: HTTP served on a unix
// socket next to the node-state file, mode 0600, so only root on the node
// (and the agent's own container) reaches it. It opens no network port.
//
// trellisctl reaches it by exec'ing `trellis-agent ctl get PATH` in the
// agent's pod through the API server (pods/exec in the agent's namespace),
// so every request is authenticated and authorised by the cluster's RBAC.
// Endpoints are versioned under /v1/ and answer JSON; a streaming endpoint
// writes one JSON object per line and flushes each.
package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// SocketName is the socket's file name in the node-state directory.
const SocketName = "agent.sock"

// SocketPath is the socket for an agent whose node-state file is
// nodeStateFile.
func SocketPath(nodeStateFile string) string {
	return filepath.Join(filepath.Dir(nodeStateFile), SocketName)
}

// Serve listens on the unix socket path (replacing a stale one) and serves
// h until ctx is cancelled, then removes the socket.
func Serve(ctx context.Context, path string, h http.Handler) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("agent API socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale agent API socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on agent API socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("restrict agent API socket %s: %w", path, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.FromContext(ctx).Info("Serving the local agent API", "socket", path)
	err = srv.Serve(ln)
	_ = os.Remove(path)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("agent API socket %s: %w", path, err)
	}
	return nil
}

// Get requests path (with its query) from the agent API at socketPath and
// copies the response body to w as it arrives (streams included). A
// non-200 answer is an error carrying the agent's message.
func Get(ctx context.Context, socketPath, path string, w io.Writer) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("agent API path %q must start with /", path)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("the agent API at %s does not answer (is the agent running?): %w", socketPath, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("agent API %s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	fw := flushWriter{w}
	if _, err := io.Copy(fw, resp.Body); err != nil && ctx.Err() == nil {
		return fmt.Errorf("agent API %s: reading the answer: %w", path, err)
	}
	return nil
}

type flushWriter struct{ w io.Writer }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(interface{ Sync() error }); ok {
		_ = fl.Sync()
	}
	return n, err
}

// WriteJSON answers v as JSON (status 200).
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// Version is the answer of /v1/version.
type Version struct {
	Version string `json:"version"`
	Node    string `json:"node"`
}

// VersionHandler serves /v1/version.
func VersionHandler(version, node string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, Version{Version: version, Node: node})
	})
}
