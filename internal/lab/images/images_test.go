package images

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestBuildImageIsImportableShape(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "pause")
	if err := os.WriteFile(bin, []byte("#!not really a binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := ImageSpec{Tags: []string{PauseImage}, Binary: bin, InImage: "/pause", Entrypoint: []string{"/pause"}}
	out, err := BuildImage(filepath.Join(dir, "images"), spec)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(PauseImage)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("reading back %s: %v", out, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || cf.OS != "linux" {
		t.Errorf("platform %s/%s: containerd would filter the image out", cf.OS, cf.Architecture)
	}
	if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/pause" {
		t.Errorf("entrypoint = %v", cf.Config.Entrypoint)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	again, err := BuildImage(filepath.Join(dir, "images"), spec)
	if err != nil || again != out {
		t.Errorf("rebuild = %s, %v; want the cached %s", again, err, out)
	}
}
