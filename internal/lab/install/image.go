package install

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/proc"
)

// ImageRef returns the reference a `docker save`-style tarball tags its
// image with (its manifest.json's RepoTags): the content-addressed tag
// `make image` writes. A tarball with no tag, several images, or a
// `:latest` tag is refused: kubelet would try to pull `:latest`.
func ImageRef(tarPath string) (string, error) {
	if _, err := os.Stat(tarPath); err != nil {
		return "", fmt.Errorf("image tarball: %w (run `make image`, or pass --image-tar)", err)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tarPath) })
	if err != nil {
		return "", fmt.Errorf("reading the manifest of %s: %w", tarPath, err)
	}
	if len(m) != 1 || len(m[0].RepoTags) == 0 {
		return "", fmt.Errorf("%s: want exactly one tagged image, found %d images", tarPath, len(m))
	}
	ref := m[0].RepoTags[0]
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("%s: bad tag %q: %w", tarPath, ref, err)
	}
	if tag.TagStr() == "latest" {
		return "", fmt.Errorf("%s is tagged %s: the lab needs a content-addressed tag (kubelet pulls :latest)", tarPath, ref)
	}
	return tag.Name(), nil
}

// ImportImage imports an image tarball into a running node's containerd
// (namespace k8s.io, where kubelet's images live), through the node's
// socket on its private /run/containerd.
func ImportImage(ctx context.Context, s node.Spec, tarPath string) error {
	sock := s.HostPath(node.ContainerdSocket)
	if sock == "" {
		return fmt.Errorf("node %s: containerd socket not on a node-private path", s.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := proc.Run(ctx, "ctr", "--address", sock, "-n", "k8s.io", "images", "import", tarPath); err != nil {
		return fmt.Errorf("node %s: importing %s: %w", s.Name, tarPath, err)
	}
	return nil
}
