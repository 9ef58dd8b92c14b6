package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := SocketPath(filepath.Join(t.TempDir(), "node-state.json"))
	// A stale socket file from a previous agent is replaced.
	if err := os.WriteFile(sock, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, sock, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("socket left behind after shutdown: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
			}
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatal("socket never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGetRoundTripsJSON(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/v1/version", VersionHandler("v1.2.3", "n1"))
	sock := serve(t, mux)
	var buf bytes.Buffer
	if err := Get(context.Background(), sock, "/v1/version", &buf); err != nil {
		t.Fatal(err)
	}
	var v Version
	if err := json.Unmarshal(buf.Bytes(), &v); err != nil {
		t.Fatalf("answer %q: %v", buf.String(), err)
	}
	if v != (Version{Version: "v1.2.3", Node: "n1"}) {
		t.Errorf("got %+v", v)
	}
}

func TestGetReportsAgentErrors(t *testing.T) {
	sock := serve(t, http.NewServeMux())
	err := Get(context.Background(), sock, "/v1/nothing", &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Get of an unknown path = %v, want a 404 error", err)
	}
	if err := Get(context.Background(), sock, "v1/version", &bytes.Buffer{}); err == nil {
		t.Error("a relative path was accepted")
	}
	err = Get(context.Background(), filepath.Join(t.TempDir(), "none.sock"), "/v1/version", &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "is the agent running") {
		t.Errorf("Get on a missing socket = %v", err)
	}
}

// The heap profile is served on the socket in pprof's protobuf format
// (gzip-compressed), and the index lists the named profiles.
func TestPprofServesTheHeapProfile(t *testing.T) {
	mux := http.NewServeMux()
	RegisterPprof(mux)
	sock := serve(t, mux)
	var heap bytes.Buffer
	if err := Get(context.Background(), sock, PprofPath+"heap", &heap); err != nil {
		t.Fatal(err)
	}
	if b := heap.Bytes(); len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("heap profile is not gzip-compressed protobuf (%d bytes, starts %q)", heap.Len(), heap.Bytes()[:min(8, heap.Len())])
	}
	var index bytes.Buffer
	if err := Get(context.Background(), sock, PprofPath, &index); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"heap", "goroutine", "allocs"} {
		if !strings.Contains(index.String(), p) {
			t.Errorf("the pprof index does not list %s", p)
		}
	}
}
