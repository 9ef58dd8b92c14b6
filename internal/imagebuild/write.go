package imagebuild

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// WriteOCILayout writes img into a fresh OCI image layout at dir (anything
// there before is removed), its index entry annotated with the reference
// (org.opencontainers.image.ref.name), as `crane`, `skopeo` and
// `ctr images import --index-name` read it.
func WriteOCILayout(dir string, img v1.Image, ref name.Tag) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("create OCI layout %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.Name(),
	})); err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	return nil
}

// WriteDockerArchive writes img as a `docker save`-style tarball tagged ref
// (what `docker load` and `ctr -n k8s.io images import` accept), atomically.
func WriteDockerArchive(file string, img v1.Image, ref name.Tag) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(file), err)
	}
	tmp := file + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write image tarball: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("write image tarball: %w", err)
	}
	return nil
}

// Size is the sum of the image's compressed layer sizes (what a node
// downloads) and of its uncompressed layers (what it unpacks).
func Size(img v1.Image) (compressed, uncompressed int64, err error) {
	layers, err := img.Layers()
	if err != nil {
		return 0, 0, fmt.Errorf("image layers: %w", err)
	}
	for _, l := range layers {
		c, err := l.Size()
		if err != nil {
			return 0, 0, fmt.Errorf("layer size: %w", err)
		}
		compressed += c
		rc, err := l.Uncompressed()
		if err != nil {
			return 0, 0, fmt.Errorf("layer: %w", err)
		}
		n, err := countBytes(rc)
		rc.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("layer: %w", err)
		}
		uncompressed += n
	}
	return compressed, uncompressed, nil
}

// Extract unpacks the image's layers, in order, into dir (for tests and
// inspection; it handles only what LayerTar writes: files, dirs, symlinks).
func Extract(img v1.Image, dir string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	return untar(rc, dir)
}
