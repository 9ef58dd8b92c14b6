package nodesetup

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// ProcSysctls sets sysctls under /proc/sys (Root overrides, for tests). The
// values apply to the network namespace of the calling process.
type ProcSysctls struct{ Root string }

// Set implements Sysctls: it writes value to <root>/<path> unless it is
// already set.
func (p ProcSysctls) Set(path, value string) error {
	root := p.Root
	if root == "" {
		root = "/proc/sys"
	}
	file := filepath.Join(root, path)
	cur, err := os.ReadFile(file)
	if err == nil && string(bytes.TrimSpace(cur)) == value {
		return nil
	}
	if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", path, value, err)
	}
	return nil
}
