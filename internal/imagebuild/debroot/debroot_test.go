package debroot

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/imagebuild"
)

func TestParseDepends(t *testing.T) {
	out := "nftables\n  Depends: libc6\n  Depends: libnftables1\nlibc6\n  Depends: libgcc-s1\n<debconf-2.0>\nlibnftables1\nlibc6\n"
	if got, want := parseDepends([]byte(out)), []string{"libc6", "libnftables1", "nftables"}; !reflect.DeepEqual(got, want) {
		t.Errorf("parseDepends = %v, want %v", got, want)
	}
}

func TestParseShow(t *testing.T) {
	out := "Package: nftables\nVersion: 1.0.6-2+deb12u2\nFilename: pool/main/n/nftables/nftables_1.0.6-2+deb12u2_amd64.deb\nSize: 1\n\n" +
		"Package: libmnl0\nSource: libmnl\nVersion: 1.0.4-3\nFilename: pool/main/libm/libmnl/libmnl0_1.0.4-3_amd64.deb\n"
	got := parseShow([]byte(out))
	want := map[string]shown{
		"nftables": {"1.0.6-2+deb12u2", "pool/main/n/nftables/nftables_1.0.6-2+deb12u2_amd64.deb"},
		"libmnl0":  {"1.0.4-3", "pool/main/libm/libmnl/libmnl0_1.0.4-3_amd64.deb"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseShow = %+v, want %+v", got, want)
	}
}

func TestManifestRoundTrip(t *testing.T) {
	debs := []Deb{{Package: "ethtool", Version: "1:6.1-1"}, {Package: "libc6", Version: "2.36-9+deb12u14"}}
	got, err := ParseManifest(Manifest(debs))
	if err != nil || !reflect.DeepEqual(got, debs) {
		t.Errorf("ParseManifest(Manifest(x)) = %v, %v; want %v", got, err, debs)
	}
	if _, err := ParseManifest([]byte("ethtool\n")); err == nil {
		t.Error("a line without a version parsed")
	}
}

func TestDebName(t *testing.T) {
	if got := debName("ethtool", "1:6.1-1", "pool/main/e/ethtool/ethtool_6.1-1_amd64.deb"); got != "ethtool_1%3a6.1-1_amd64.deb" {
		t.Errorf("debName = %q", got)
	}
	if got := debName("libc6", "2.36-9", "pool/main/g/glibc/libc6_2.36-9_amd64.deb"); got != "libc6_2.36-9_amd64.deb" {
		t.Errorf("debName = %q", got)
	}
}

// Symlinks are followed (relative and absolute) and both the links and
// their targets are kept; a missing file is an error naming who needs it.
func TestClosureFollowsSymlinks(t *testing.T) {
	root := t.TempDir()
	write := func(p, data string, mode os.FileMode) {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	link := func(p, target string) {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	write("/usr/lib/tool/real", "#!/bin/sh\n", 0o755)
	link("/usr/sbin/tool", "../lib/tool/real")
	link("/sbin/tool", "/usr/sbin/tool")
	entries, err := Closure(root, []string{"/sbin/tool"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]imagebuild.Entry{}
	for _, e := range entries {
		got[e.Path] = e
	}
	if len(got) != 3 || got["/sbin/tool"].Target != "/usr/sbin/tool" || got["/usr/sbin/tool"].Target != "../lib/tool/real" ||
		!got["/usr/lib/tool/real"].Executable || string(got["/usr/lib/tool/real"].Data) != "#!/bin/sh\n" {
		t.Errorf("closure = %+v", entries)
	}
	link("/usr/sbin/broken", "gone")
	if _, err := Closure(root, []string{"/usr/sbin/broken"}); err == nil || !strings.Contains(err.Error(), "needed by /usr/sbin/broken") {
		t.Errorf("broken symlink: err = %v", err)
	}
}
