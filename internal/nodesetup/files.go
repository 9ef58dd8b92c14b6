package nodesetup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// ConflistName is the file the agent writes in the CNI config directory.
const ConflistName = "10-trellis.conflist"

// PluginName is the plugin binary's name (the conflist's "type").
const PluginName = "trellis-cni"

// ConflistParams fill the conflist template (the shared contract).
type ConflistParams struct {
	CNIVersion    string
	MTU           int
	NodeStateFile string
	IPAMDataDir   string
	LogFile       string
	LogLevel      string
	// RequireDataplane sets the plugin's dataplane gate (the agent's
	// conflist always does).
	RequireDataplane bool
}

type conflist struct {
	CNIVersion string         `json:"cniVersion"`
	Name       string         `json:"name"`
	Plugins    []pluginConfig `json:"plugins"`
}

type pluginConfig struct {
	Type          string     `json:"type"`
	MTU           int        `json:"mtu"`
	NodeStateFile string     `json:"nodeStateFile"`
	IPAM          ipamConfig `json:"ipam"`
	LogFile       string     `json:"logFile"`
	LogLevel      string     `json:"logLevel"`
	// RequireDataplane: wire pods only while the agent's base dataplane is
	// in place (internal/cni gate.go).
	RequireDataplane bool `json:"requireDataplane,omitempty"`
}

type ipamConfig struct {
	DataDir string `json:"dataDir"`
}

// RenderConflist returns the conflist bytes for p.
func RenderConflist(p ConflistParams) ([]byte, error) {
	c := conflist{
		CNIVersion: p.CNIVersion,
		Name:       "trellis",
		Plugins: []pluginConfig{{
			Type: PluginName, MTU: p.MTU, NodeStateFile: p.NodeStateFile,
			IPAM: ipamConfig{DataDir: p.IPAMDataDir}, LogFile: p.LogFile, LogLevel: p.LogLevel,
			RequireDataplane: p.RequireDataplane,
		}},
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	return append(b, '\n'), nil
}

// writeIfChanged atomically writes data to path unless it already holds it.
// It reports whether it wrote.
func writeIfChanged(path string, data []byte, perm os.FileMode) (bool, error) {
	cur, err := os.ReadFile(path)
	if err == nil && bytes.Equal(cur, data) {
		return false, nil
	}
	if err := atomicfile.Write(path, data, perm); err != nil {
		return false, err
	}
	return true, nil
}

// InstallPlugin copies src to dir/PluginName atomically (a runtime calling
// the plugin meanwhile runs the old or the new binary, never a torn one),
// unless the destination already has the same bytes. It reports whether it
// copied. A missing source is not an error when the destination exists
// (someone else installed it); then installed is false. The comparison
// streams both files through small buffers: it runs on every node-setup
// sync, and reading the multi-megabyte plugin into memory each time grew
// the agent's heap by twice its size; the copy streams as well.
func InstallPlugin(src, dir string) (installed bool, err error) {
	dst := filepath.Join(dir, PluginName)
	same, err := sameFiles(src, dst)
	if errors.Is(err, errSourceMissing) {
		if _, statErr := os.Stat(dst); statErr == nil {
			return false, nil
		}
		return false, fmt.Errorf("plugin source %s does not exist and %s is not installed: %w", src, dst, err)
	}
	if err != nil {
		return false, fmt.Errorf("read plugin source: %w", err)
	}
	if same {
		return false, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("read plugin source: %w", err)
	}
	defer f.Close()
	if err := atomicfile.WriteFrom(dst, f, 0o755); err != nil {
		return false, fmt.Errorf("install plugin: %w", err)
	}
	return true, nil
}

var errSourceMissing = errors.New("source missing")

// sameFiles reports whether dst holds the same bytes as src. A missing or
// unreadable dst is "not the same"; a missing src is errSourceMissing.
func sameFiles(src, dst string) (bool, error) {
	a, err := os.Open(src)
	if errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("%w: %w", errSourceMissing, err)
	}
	if err != nil {
		return false, err
	}
	defer a.Close()
	b, err := os.Open(dst)
	if err != nil {
		return false, nil
	}
	defer b.Close()
	sa, err := a.Stat()
	if err != nil {
		return false, err
	}
	if sb, err := b.Stat(); err != nil || sa.Size() != sb.Size() {
		return false, nil
	}
	const chunk = 32 << 10
	bufA, bufB := make([]byte, chunk), make([]byte, chunk)
	for {
		na, errA := io.ReadFull(a, bufA)
		nb, errB := io.ReadFull(b, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return errB == errA, nil
		}
		if errA != nil {
			return false, errA
		}
		if errB != nil {
			return false, nil
		}
	}
}
