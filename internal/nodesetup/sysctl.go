package nodesetup

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
)

// ProcSysctls sets sysctls under /proc/sys (Root overrides, for tests). The
// values apply to the network namespace of the calling process.
type ProcSysctls struct{ Root string }

// Set implements Sysctls: it writes value to <root>/<path> unless it is
// already set.
func (p ProcSysctls) Set(path, value string) error {
	file := p.file(path)
	cur, err := os.ReadFile(file)
	if err == nil && string(bytes.TrimSpace(cur)) == value {
		return nil
	}
	if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", path, value, err)
	}
	return nil
}

// Get reads <root>/<path>, trimmed.
func (p ProcSysctls) Get(path string) (string, error) {
	b, err := os.ReadFile(p.file(path))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", path, err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func (p ProcSysctls) file(path string) string {
	root := p.Root
	if root == "" {
		root = "/proc/sys"
	}
	return filepath.Join(root, path)
}

// NetnsSysctls reads and sets sysctls inside another network namespace
// (benchmarks and tests that play a node in a namespace).
type NetnsSysctls struct{ NS ns.NetNS }

// Get reads path inside the namespace.
func (s NetnsSysctls) Get(path string) (v string, err error) {
	err = s.NS.Do(func(ns.NetNS) error { v, err = (ProcSysctls{}).Get(path); return err })
	return v, err
}

// Set writes path inside the namespace (unless already set).
func (s NetnsSysctls) Set(path, value string) error {
	return s.NS.Do(func(ns.NetNS) error { return (ProcSysctls{}).Set(path, value) })
}
