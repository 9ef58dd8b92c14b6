package kuberouter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/imagebuild"
	"github.com/trellisnet/trellis/internal/imagebuild/debroot"
)

// ImageRepo is the repository of the image built here (never pushed).
const ImageRepo = "localhost/trellis-lab/kube-router"

// Debian packages with the tools kube-router executes: iptables (its
// nftables backend, as the host's) and ipset.
var (
	imagePackages = []string{"iptables", "ipset"}
	imageTools    = []string{"/usr/sbin/xtables-nft-multi", "/usr/sbin/ipset"}
)

// xtablesExtDir holds iptables' extensions (libxt_*.so, libipt_*.so).
const xtablesExtDir = "/usr/lib/x86_64-linux-gnu/xtables"

// xtablesLinks are the command names kube-router (through go-iptables) runs,
// all served by xtables-nft-multi.
var xtablesLinks = []string{
	"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore",
	"iptables-nft", "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore",
}

// rtTables is iproute2's table of reserved routing table names.
const rtTables = "#\n# reserved values\n#\n255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n"

// ImageEntries returns the image's layers: the tools with their libraries
// and loader (from the unpacked Debian packages under root) plus the names
// kube-router calls them by, and the kube-router binary.
func ImageEntries(root string, binary []byte) ([]imagebuild.Layer, error) {
	bins := append([]string(nil), imageTools...)
	// iptables loads its match and target extensions with dlopen: they are
	// no DT_NEEDED of the binary, so each one is a root of the closure.
	exts, err := filepath.Glob(filepath.Join(root, xtablesExtDir, "*.so"))
	if err != nil || len(exts) == 0 {
		return nil, fmt.Errorf("no iptables extensions in %s of the unpacked packages", xtablesExtDir)
	}
	for _, e := range exts {
		bins = append(bins, xtablesExtDir+"/"+filepath.Base(e))
	}
	tools, err := debroot.Closure(root, bins)
	if err != nil {
		return nil, err
	}
	for _, l := range xtablesLinks {
		tools = append(tools, imagebuild.Entry{Path: "/usr/sbin/" + l, Kind: imagebuild.Symlink, Target: "xtables-nft-multi"})
	}
	own := []imagebuild.Entry{
		{Path: "/usr/local/bin/kube-router", Data: binary, Executable: true},
		// kube-router reads and edits the routing table names.
		{Path: "/etc/iproute2/rt_tables", Data: []byte(rtTables)},
		{Path: "/tmp", Kind: imagebuild.Dir},
		{Path: "/var/run", Kind: imagebuild.Symlink, Target: "/run"},
		{Path: "/run", Kind: imagebuild.Dir},
	}
	return []imagebuild.Layer{
		{Name: "iptables (nftables backend) and ipset from Debian", Entries: tools},
		{Name: "kube-router " + Version, Entries: own},
	}, nil
}

// BuildImage builds the kube-router image (kube-router's static binary, and
// iptables and ipset with exactly their libraries from Debian packages cached
// in debCache) as a docker-archive tarball under dir, reused while the binary
// and the package versions are the same. It returns the tarball's path and
// the image reference.
func BuildImage(ctx context.Context, dir, debCache, binaryPath string) (string, string, error) {
	binary, err := os.ReadFile(binaryPath)
	if err != nil {
		return "", "", fmt.Errorf("reading kube-router (run `hack/build-pinned.sh kube-router`): %w", err)
	}
	names, err := debroot.Resolve(ctx, imagePackages)
	if err != nil {
		return "", "", err
	}
	debs, err := debroot.Fetch(ctx, debCache, names)
	if err != nil {
		return "", "", err
	}
	h := sha256.New()
	h.Write(binary)
	h.Write(debroot.Manifest(debs))
	key := hex.EncodeToString(h.Sum(nil))[:16]
	tarPath := filepath.Join(dir, "kube-router-"+Version+"-"+key+".tar")
	refPath := tarPath + ".ref"
	if ref, err := os.ReadFile(refPath); err == nil {
		if _, err := os.Stat(tarPath); err == nil {
			return tarPath, string(ref), nil
		}
	}
	unpacked, err := os.MkdirTemp("", "kube-router-image-")
	if err != nil {
		return "", "", fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(unpacked)
	if err := debroot.Unpack(ctx, debs, unpacked); err != nil {
		return "", "", err
	}
	layers, err := ImageEntries(unpacked, binary)
	if err != nil {
		return "", "", err
	}
	img, err := imagebuild.Build(imagebuild.Spec{
		Layers:     layers,
		Entrypoint: []string{"/usr/local/bin/kube-router"},
		Env:        []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Created:    time.Unix(0, 0).UTC(),
	})
	if err != nil {
		return "", "", err
	}
	tag, err := imagebuild.ContentTag(ImageRepo, img)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	if err := imagebuild.WriteDockerArchive(tarPath, img, tag); err != nil {
		return "", "", err
	}
	if err := atomicfile.Write(refPath, []byte(tag.Name()), 0o644); err != nil {
		return "", "", err
	}
	return tarPath, tag.Name(), nil
}
