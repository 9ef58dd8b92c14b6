// Command build-image builds the Trellis image (linux/amd64) without a base
// image, a daemon or a registry: /trellis-agent, /trellis-bgp (the agent's
// BGP speaker process) and /trellis-cni from the build, and the host tools the agent runs (nft for knftables, ethtool for
// the VXLAN tx-checksum option) with exactly the libraries and loader they
// need, taken from Debian packages (internal/imagebuild/debroot). It writes
// an OCI image layout, a `docker save`-style tarball, the reference
// (repo:<12 hex of the digest>), the digest and the package versions.
//
// -image bench builds the benchmark image instead (dpbench.Image, for
// `trellisctl bench`): Debian's iperf3 with its libraries and
// /trellis-bench (images/bench), tagged with the fixed dpbench.Image, into
// trellis-bench.tar.
//
// -image agnhost builds the lab's test image (images.AgnhostImage, the name
// the upstream e2e specs use): /agnhost (-agnhost, the pinned build) and the
// tools the upstream specs run in it through a shell, as in the upstream
// image: Debian's curl, netcat-openbsd (nc, with UDP) and dash (/bin/sh)
// with their libraries, and busybox-static for sleep, grep and the other
// basics; into agnhost.tar.
//
// Reproducible: the same binaries and packages give the same digest
// (timestamps are SOURCE_DATE_EPOCH or 0). -lock reuses the package set of
// an earlier build (packages.txt) instead of asking apt for the candidates.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/internal/imagebuild"
	"github.com/trellisnet/trellis/internal/imagebuild/debroot"
	"github.com/trellisnet/trellis/internal/lab/images"
)

type options struct {
	bin, debs, out, repo, lock string
	packages, tools            string
	image, agnhost             string
}

// content is what goes into an image besides the Debian tools.
type content struct {
	own        []string          // binaries from -bin, at /NAME
	files      map[string]string // more binaries: path in the image -> host path
	links      []imagebuild.Entry
	entrypoint []string
	cmd        []string
	tag        string // a fixed reference; "" is repo:<12 hex of the digest>
	tarball    string
}

// busyboxApplets are linked to busybox-static in the agnhost image: what the
// upstream specs' shell commands use, and the basics of a debugging shell.
var busyboxApplets = []string{"ash", "sleep", "grep", "egrep", "cat", "echo", "ls", "env", "sed", "awk", "head", "tail",
	"wc", "tr", "cut", "printf", "test", "[", "true", "false", "hostname", "ps", "kill", "mkdir", "rm", "cp", "mv", "date",
	"id", "timeout", "wget", "nslookup", "ip", "ping", "ping6", "sort", "uniq", "xargs", "touch", "seq"}

func (o *options) content() (content, error) {
	switch o.image {
	case "trellis":
		return content{own: []string{"trellis-agent", "trellis-bgp", "trellis-cni"}, entrypoint: []string{"/trellis-agent"}, tarball: "trellis-image.tar"}, nil
	case "bench":
		o.packages, o.tools = "iperf3", "/usr/bin/iperf3"
		return content{own: []string{"trellis-bench"}, entrypoint: []string{"/trellis-bench"}, tag: dpbench.Image, tarball: "trellis-bench.tar"}, nil
	case "agnhost":
		if o.agnhost == "" {
			return content{}, errors.New("-image agnhost needs -agnhost (the agnhost binary: hack/build-pinned.sh --print-dir agnhost)")
		}
		// /bin/sh is dash, not busybox's ash: ash runs its own applets
		// before the PATH (its nc has no -u), dash runs /bin/nc.
		o.packages, o.tools = "curl,netcat-openbsd,busybox-static,dash", "/usr/bin/curl,/bin/nc.openbsd,/bin/busybox,/bin/dash"
		links := []imagebuild.Entry{{Path: "/bin/nc", Kind: imagebuild.Symlink, Target: "nc.openbsd"},
			{Path: "/bin/sh", Kind: imagebuild.Symlink, Target: "dash"}}
		for _, a := range busyboxApplets {
			links = append(links, imagebuild.Entry{Path: "/bin/" + a, Kind: imagebuild.Symlink, Target: "busybox"})
		}
		return content{files: map[string]string{"/agnhost": o.agnhost}, links: links, entrypoint: []string{"/agnhost"},
			cmd: []string{"pause"}, tag: images.AgnhostImage, tarball: "agnhost.tar"}, nil
	}
	return content{}, fmt.Errorf("-image %q: want trellis, bench or agnhost", o.image)
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding trellis-agent, trellis-bgp and trellis-cni")
	flag.StringVar(&o.debs, "debs", filepath.Join(envOr("TRELLIS_CACHE", "/var/cache/trellis"), "debs"), "cache of downloaded .deb files")
	flag.StringVar(&o.out, "out", "bin/image", "output directory")
	flag.StringVar(&o.repo, "repo", "ghcr.io/trellisnet/trellis", "image repository (the tag is the digest's first 12 hex digits)")
	flag.StringVar(&o.packages, "packages", "nftables,ethtool", "Debian packages holding the tools (their Depends are added)")
	flag.StringVar(&o.tools, "tools", "/usr/sbin/nft,/sbin/ethtool", "the tools' paths in the packages")
	flag.StringVar(&o.image, "image", "trellis", "which image: trellis (the agent), bench (iperf3 and trellis-bench) or agnhost (the lab's test image); bench and agnhost override -packages and -tools")
	flag.StringVar(&o.agnhost, "agnhost", "", "-image agnhost: the agnhost binary")
	flag.StringVar(&o.lock, "lock", "", "packages.txt of an earlier build: use exactly those package versions")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "build-image:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, o options) error {
	created, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	c, err := o.content()
	if err != nil {
		return err
	}
	debs, err := packages(ctx, o)
	if err != nil {
		return err
	}
	unpacked, err := os.MkdirTemp("", "trellis-image-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(unpacked)
	if err := debroot.Unpack(ctx, debs, unpacked); err != nil {
		return err
	}
	tools, err := debroot.Closure(unpacked, strings.Split(o.tools, ","))
	if err != nil {
		return err
	}
	var own []imagebuild.Entry
	for _, b := range c.own {
		data, err := os.ReadFile(filepath.Join(o.bin, b))
		if err != nil {
			return fmt.Errorf("read %s (run make build or make lab-build): %w", b, err)
		}
		own = append(own, imagebuild.Entry{Path: "/" + b, Data: data, Executable: true})
	}
	names := append([]string{}, c.own...)
	for _, in := range slices.Sorted(maps.Keys(c.files)) {
		host := c.files[in]
		data, err := os.ReadFile(host)
		if err != nil {
			return fmt.Errorf("read %s: %w", host, err)
		}
		own = append(own, imagebuild.Entry{Path: in, Data: data, Executable: true})
		names = append(names, strings.TrimPrefix(in, "/"))
	}
	own = append(own, imagebuild.Entry{Path: "/tmp", Kind: imagebuild.Dir})
	tools = append(tools, c.links...)
	img, err := imagebuild.Build(imagebuild.Spec{
		Layers: []imagebuild.Layer{
			{Name: "host tools from Debian: " + o.packages, Entries: tools},
			{Name: strings.Join(names, ", "), Entries: own},
		},
		Entrypoint: c.entrypoint,
		Cmd:        c.cmd,
		Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels:     map[string]string{"org.opencontainers.image.source": "https://github.com/trellisnet/trellis"},
		Created:    created,
	})
	if err != nil {
		return err
	}
	return write(o, c, img, debs)
}

func write(o options, c content, img v1.Image, debs []debroot.Deb) error {
	tag, err := imagebuild.ContentTag(o.repo, img)
	if c.tag != "" {
		tag, err = name.NewTag(c.tag)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", o.out, err)
	}
	if err := imagebuild.WriteOCILayout(filepath.Join(o.out, "oci"), img, tag); err != nil {
		return err
	}
	if err := imagebuild.WriteDockerArchive(filepath.Join(o.out, c.tarball), img, tag); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	files := map[string]string{
		"image.ref":    tag.Name() + "\n",
		"image.digest": digest.String() + "\n",
		"packages.txt": string(debroot.Manifest(debs)),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(o.out, name), []byte(data), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	compressed, uncompressed, err := imagebuild.Size(img)
	if err != nil {
		return err
	}
	fmt.Printf("image %s\ndigest %s\nsize %.1f MiB compressed, %.1f MiB uncompressed\noutputs %s/{oci,%s,image.ref,image.digest,packages.txt}\n",
		tag.Name(), digest, float64(compressed)/(1<<20), float64(uncompressed)/(1<<20), o.out, c.tarball)
	return nil
}

// packages returns the .debs to unpack: the lock file's versions, or the
// candidates apt resolves for -packages and their dependencies.
func packages(ctx context.Context, o options) ([]debroot.Deb, error) {
	if o.lock == "" {
		names, err := debroot.Resolve(ctx, strings.Split(o.packages, ","))
		if err != nil {
			return nil, err
		}
		return debroot.Fetch(ctx, o.debs, names)
	}
	data, err := os.ReadFile(o.lock)
	if err != nil {
		return nil, fmt.Errorf("read lock: %w", err)
	}
	pinned, err := debroot.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.lock, err)
	}
	return debroot.FetchPinned(ctx, o.debs, pinned)
}

// sourceDateEpoch is the build's timestamp: SOURCE_DATE_EPOCH, else 0.
func sourceDateEpoch(v string) (time.Time, error) {
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, errors.Join(fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative integer", v), err)
	}
	return time.Unix(n, 0).UTC(), nil
}
