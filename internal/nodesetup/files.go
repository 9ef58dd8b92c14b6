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
// (someone else installed it); then installed is false.
func InstallPlugin(src, dir string) (installed bool, err error) {
	dst := filepath.Join(dir, PluginName)
	srcData, err := os.ReadFile(src)
	if errors.Is(err, os.ErrNotExist) {
		if _, statErr := os.Stat(dst); statErr == nil {
			return false, nil
		}
		return false, fmt.Errorf("plugin source %s does not exist and %s is not installed: %w", src, dst, err)
	}
	if err != nil {
		return false, fmt.Errorf("read plugin source: %w", err)
	}
	if same, err := sameContent(dst, srcData); err == nil && same {
		return false, nil
	}
	if err := atomicfile.Write(dst, srcData, 0o755); err != nil {
		return false, fmt.Errorf("install plugin: %w", err)
	}
	return true, nil
}

func sameContent(path string, want []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() != int64(len(want)) {
		return false, err
	}
	have, err := io.ReadAll(f)
	if err != nil {
		return false, err
	}
	return bytes.Equal(have, want), nil
}
