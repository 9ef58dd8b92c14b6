package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func fakeSpec(agent string) Spec {
	return Spec{
		Layers: []Layer{
			{Name: "host tools", Entries: []Entry{
				{Path: "/usr/sbin/nft", Data: []byte("fake nft"), Executable: true},
				{Path: "/lib64/ld-linux-x86-64.so.2", Kind: Symlink, Target: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
				{Path: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", Data: []byte("fake loader"), Executable: true},
				{Path: "/lib/x86_64-linux-gnu/libc.so.6", Data: []byte("fake libc")},
			}},
			{Name: "trellis", Entries: []Entry{
				{Path: "/trellis-cni", Data: []byte("fake cni"), Executable: true},
				{Path: "/trellis-agent", Data: []byte(agent), Executable: true},
				{Path: "/tmp", Kind: Dir},
			}},
		},
		Entrypoint: []string{"/trellis-agent"},
		Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Created:    time.Unix(0, 0).UTC(),
	}
}

// Two builds of the same input give the same digest; a changed byte gives
// another; so does another timestamp.
func TestBuildIsReproducible(t *testing.T) {
	digest := func(s Spec) string {
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	a, b := digest(fakeSpec("agent v1")), digest(fakeSpec("agent v1"))
	if a != b {
		t.Fatalf("same input, different digests: %s vs %s", a, b)
	}
	// Entry order does not matter.
	s := fakeSpec("agent v1")
	l := s.Layers[1].Entries
	l[0], l[2] = l[2], l[0]
	if c := digest(s); c != a {
		t.Errorf("reordered entries changed the digest: %s vs %s", c, a)
	}
	if c := digest(fakeSpec("agent v2")); c == a {
		t.Errorf("different agent binary, same digest %s", a)
	}
	s = fakeSpec("agent v1")
	s.Created = time.Unix(1700000000, 0).UTC()
	if c := digest(s); c == a {
		t.Errorf("different SOURCE_DATE_EPOCH, same digest %s", a)
	}
}

// The layer tar is sorted, has every parent directory, root ownership, the
// fixed timestamp and normalised modes.
func TestLayerTarIsNormalised(t *testing.T) {
	mtime := time.Unix(42, 0).UTC()
	data, err := LayerTar(fakeSpec("x").Layers[0].Entries, mtime)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	modes := map[string]int64{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		modes[h.Name] = h.Mode
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(mtime) {
			t.Errorf("%s: uid %d gid %d uname %q gname %q mtime %v", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
	}
	want := []string{"lib/", "lib/x86_64-linux-gnu/", "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
		"lib/x86_64-linux-gnu/libc.so.6", "lib64/", "lib64/ld-linux-x86-64.so.2", "usr/", "usr/sbin/", "usr/sbin/nft"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q", names, want)
		}
	}
	for name, mode := range map[string]int64{"usr/sbin/nft": 0o755, "lib/x86_64-linux-gnu/libc.so.6": 0o644, "usr/": 0o755} {
		if modes[name] != mode {
			t.Errorf("%s: mode %o, want %o", name, modes[name], mode)
		}
	}
}

func TestLayerTarRejectsBadEntries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []Entry
	}{
		{"relative path", []Entry{{Path: "usr/x"}}},
		{"conflicting duplicates", []Entry{{Path: "/a", Data: []byte("1")}, {Path: "/a", Data: []byte("2")}}},
		{"file as a parent", []Entry{{Path: "/a", Data: []byte("1")}, {Path: "/a/b", Data: []byte("2")}}},
		{"symlink without target", []Entry{{Path: "/a", Kind: Symlink}}},
	} {
		if _, err := LayerTar(tc.entries, time.Unix(0, 0)); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// Both outputs hold the image under its content tag, and extracting it
// gives the files back.
func TestWriteOutputs(t *testing.T) {
	img, err := Build(fakeSpec("agent"))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := ContentTag("ghcr.io/trellisnet/trellis", img)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^ghcr\.io/trellisnet/trellis:[0-9a-f]{12}$`).MatchString(tag.Name()) {
		t.Fatalf("tag %q is not repo:<12 hex>", tag.Name())
	}
	dir := t.TempDir()
	if err := WriteDockerArchive(filepath.Join(dir, "image.tar"), img, tag); err != nil {
		t.Fatal(err)
	}
	fromTar, err := tarball.ImageFromPath(filepath.Join(dir, "image.tar"), &tag)
	if err != nil {
		t.Fatalf("read back the tarball by its tag: %v", err)
	}
	if err := WriteOCILayout(filepath.Join(dir, "oci"), img, tag); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(filepath.Join(dir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != tag.Name() {
		t.Fatalf("OCI index %+v does not name %s", im.Manifests, tag)
	}
	want, _ := img.Digest()
	if got, _ := fromTar.Digest(); got != want {
		t.Errorf("tarball image digest %s, built %s", got, want)
	}
	if im.Manifests[0].Digest != want {
		t.Errorf("OCI layout image digest %s, built %s", im.Manifests[0].Digest, want)
	}
	root := filepath.Join(dir, "rootfs")
	if err := Extract(img, root); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "trellis-agent")); err != nil || string(b) != "agent" {
		t.Errorf("extracted /trellis-agent: %q, %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "lib64", "ld-linux-x86-64.so.2")); err != nil || target != "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" {
		t.Errorf("extracted loader symlink: %q, %v", target, err)
	}
	c, u, err := Size(img)
	if err != nil || c <= 0 || u < c/2 {
		t.Errorf("Size = %d, %d, %v", c, u, err)
	}
}
