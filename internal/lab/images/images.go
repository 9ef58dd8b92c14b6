// Package images builds the single-binary images every lab node imports
// into its containerd (the sandbox image and CoreDNS) from static binaries,
// without a registry, and names them, and the agnhost test image built by
// hack/build-image, as the pods and containerd expect.
package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// Image names the nodes' containerd must hold (imported, never pulled).
const (
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	PauseImage   = "registry.k8s.io/pause:3.10.1"
	// CoreDNSVersion is the CoreDNS release hack/build-pinned.sh builds; the
	// image carries it as its tag, as the upstream image does.
	CoreDNSVersion = "v1.15.0"
	CoreDNSImage   = "registry.k8s.io/coredns/coredns:" + CoreDNSVersion
)

// ImageSpec describes a single-binary image built without a registry.
type ImageSpec struct {
	Tags       []string
	Binary     string // host path of a static binary
	InImage    string // its path inside the image
	Entrypoint []string
	Cmd        []string
}

// LabImages are the single-binary images every node imports, from the
// static binaries of the pause program and CoreDNS. The agnhost image, with
// the tools the upstream specs run in it, is built from Debian packages
// (hack/build-image -image agnhost) and imported beside them.
func LabImages(pause, coredns string) []ImageSpec {
	return []ImageSpec{
		{Tags: []string{PauseImage}, Binary: pause, InImage: "/pause", Entrypoint: []string{"/pause"}},
		{Tags: []string{CoreDNSImage}, Binary: coredns, InImage: "/coredns", Entrypoint: []string{"/coredns"}},
	}
}

// BuildImage writes s as a docker-archive tarball under dir, named by the
// content hash of the binary and the tags, and returns its path. An existing
// tarball is reused.
func BuildImage(dir string, s ImageSpec) (string, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return "", fmt.Errorf("reading image binary: %w", err)
	}
	h := sha256.New()
	h.Write(bin)
	for _, t := range append(append(s.Tags, s.Entrypoint...), s.Cmd...) {
		h.Write([]byte(t + "\x00"))
	}
	out := filepath.Join(dir, filepath.Base(s.InImage)+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".tar")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	layerTar, err := singleFileTar(s.InImage, bin)
	if err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return "", fmt.Errorf("creating layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", fmt.Errorf("appending layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", fmt.Errorf("reading image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config.Entrypoint, cf.Config.Cmd = s.Entrypoint, s.Cmd
	cf.Config.Env = []string{"PATH=/"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return "", fmt.Errorf("setting image config: %w", err)
	}
	refs := map[name.Reference]v1.Image{}
	for _, t := range s.Tags {
		tag, err := name.NewTag(t)
		if err != nil {
			return "", fmt.Errorf("parsing tag %q: %w", t, err)
		}
		refs[tag] = img
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarball.MultiRefWrite(refs, pw)) }()
	err = atomicfile.WriteFrom(out, pr, 0o644)
	pr.CloseWithError(err) // unblocks the writer if the file write failed
	if err != nil {
		return "", fmt.Errorf("writing image tarball: %w", err)
	}
	return out, nil
}

func singleFileTar(path string, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: path[1:], Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return nil, fmt.Errorf("writing tar header: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return nil, fmt.Errorf("writing tar: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing tar: %w", err)
	}
	return buf.Bytes(), nil
}
