//go:build kernel

package debroot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/imagebuild"
)

// The host tools, taken from Debian packages with only the files their
// ELF closure names, run inside the image's root filesystem: the loader and
// every library they need are there, and nothing from the host is used.
func TestKernelImageToolsRunInChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (chroot)")
	}
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	cache := os.Getenv("TRELLIS_CACHE")
	if cache == "" {
		cache = "/var/cache/trellis"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pkgs, err := Resolve(ctx, []string{"nftables", "ethtool"})
	if err != nil {
		t.Fatal(err)
	}
	debs, err := Fetch(ctx, filepath.Join(cache, "debs"), pkgs)
	if err != nil {
		t.Fatal(err)
	}
	unpacked := t.TempDir()
	if err := Unpack(ctx, debs, unpacked); err != nil {
		t.Fatal(err)
	}
	entries, err := Closure(unpacked, []string{"/usr/sbin/nft", "/sbin/ethtool"})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagebuild.Build(imagebuild.Spec{Layers: []imagebuild.Layer{{Name: "tools", Entries: entries}},
		Created: time.Unix(0, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := imagebuild.Extract(img, root); err != nil {
		t.Fatal(err)
	}
	for tool, want := range map[string]string{"/usr/sbin/nft": "nftables v", "/sbin/ethtool": "ethtool version"} {
		out, err := exec.CommandContext(ctx, "chroot", root, tool, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("chroot %s --version: %v: %s", tool, err, out)
		}
	}
	// Nothing beyond the closure: no package's documentation, man pages or
	// unneeded libraries.
	for _, e := range entries {
		if strings.HasPrefix(e.Path, "/usr/share/") {
			t.Errorf("closure holds %s", e.Path)
		}
	}
	t.Logf("%d entries from %d packages", len(entries), len(debs))
}
