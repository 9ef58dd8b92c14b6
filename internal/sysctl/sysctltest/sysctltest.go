// Package sysctltest gives tier-0 tests a fake /proc/sys tree for
// sysctl.Proc{Root: ...}.
package sysctltest

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteTree writes files below root as /proc/sys holds them: each key a
// path relative to root ("net/ipv6/conf/all/forwarding"), each value the
// file's content followed by a newline. It fails the test on any error.
func WriteTree(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for path, v := range files {
		f := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
