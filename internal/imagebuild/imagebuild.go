// Package imagebuild turns lists of file entries into a reproducible OCI
// image (one layer per list) without a base image, a daemon or a registry,
// and writes it as an OCI image layout and as a `docker save`-style
// tarball. The same entries and config always give the same digest: layer
// entries are sorted, parent directories are added, owners are 0:0, modes
// are normalised and every timestamp is the given epoch.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Kind is the type of a filesystem entry.
type Kind int

// Entry kinds.
const (
	File Kind = iota
	Dir
	Symlink
)

// Entry is one file, directory or symbolic link of a layer.
type Entry struct {
	// Path is absolute inside the image ("/usr/sbin/nft").
	Path string
	Kind Kind
	// Data is a regular file's content.
	Data []byte
	// Executable gives a regular file mode 0755 instead of 0644.
	Executable bool
	// Target is a symbolic link's target.
	Target string
}

// Layer is a named list of entries (the name goes into the image history).
type Layer struct {
	Name    string
	Entries []Entry
}

// Spec is everything an image is made of.
type Spec struct {
	Layers     []Layer
	Entrypoint []string
	Cmd        []string
	Env        []string
	Labels     map[string]string
	// Created is the timestamp of the image, its history and every file
	// (SOURCE_DATE_EPOCH, or the Unix epoch).
	Created time.Time
}

// Build returns the linux/amd64 image described by s.
func Build(s Spec) (v1.Image, error) {
	img := empty.Image
	for _, l := range s.Layers {
		data, err := LayerTar(l.Entries, s.Created)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Name, err)
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Name, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
			Created: v1.Time{Time: s.Created}, CreatedBy: "imagebuild: " + l.Name, Comment: l.Name,
		}})
		if err != nil {
			return nil, fmt.Errorf("append layer %s: %w", l.Name, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: s.Created}
	cf.Config.Entrypoint, cf.Config.Cmd = s.Entrypoint, s.Cmd
	cf.Config.Env = s.Env
	cf.Config.Labels = s.Labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set image config: %w", err)
	}
	return img, nil
}

// LayerTar returns the uncompressed tar of entries: sorted by path, every
// parent directory present, owner 0:0, mode 0755 (directories,
// executables) or 0644, modification time mtime. Duplicate paths that
// disagree are an error.
func LayerTar(entries []Entry, mtime time.Time) ([]byte, error) {
	all, err := normalise(entries)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range all {
		h := &tar.Header{Name: strings.TrimPrefix(e.Path, "/"), ModTime: mtime, Format: tar.FormatPAX}
		switch e.Kind {
		case Dir:
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, h.Name+"/"
		case Symlink:
			h.Typeflag, h.Mode, h.Linkname = tar.TypeSymlink, 0o777, e.Target
		default:
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(e.Data))
			if e.Executable {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", e.Path, err)
		}
		if e.Kind == File {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, fmt.Errorf("tar %s: %w", e.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	return buf.Bytes(), nil
}

// normalise cleans paths, adds missing parent directories, drops exact
// duplicates and sorts.
func normalise(entries []Entry) ([]Entry, error) {
	byPath := map[string]Entry{}
	var errs []error
	add := func(e Entry) {
		if old, ok := byPath[e.Path]; ok {
			if old.Kind != e.Kind || old.Target != e.Target || old.Executable != e.Executable || !bytes.Equal(old.Data, e.Data) {
				errs = append(errs, fmt.Errorf("%s: two different entries", e.Path))
			}
			return
		}
		byPath[e.Path] = e
	}
	for _, e := range entries {
		if !path.IsAbs(e.Path) || e.Path == "/" {
			errs = append(errs, fmt.Errorf("%q: entry paths must be absolute and not /", e.Path))
			continue
		}
		e.Path = path.Clean(e.Path)
		if e.Kind == Symlink && e.Target == "" {
			errs = append(errs, fmt.Errorf("%s: symlink without a target", e.Path))
			continue
		}
		add(e)
		for dir := path.Dir(e.Path); dir != "/"; dir = path.Dir(dir) {
			if _, ok := byPath[dir]; !ok {
				byPath[dir] = Entry{Path: dir, Kind: Dir}
			}
		}
	}
	for p, e := range byPath {
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if byPath[dir].Kind != Dir {
				errs = append(errs, fmt.Errorf("%s: parent %s is not a directory", p, dir))
			}
		}
		_ = e
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(byPath))
	for _, e := range byPath {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// ContentTag is repo:<first 12 hex digits of the image digest>: a tag that
// names this content, so a new build is a new tag (kubelet with
// IfNotPresent never reuses a stale image) and nothing is ever :latest.
func ContentTag(repo string, img v1.Image) (name.Tag, error) {
	d, err := img.Digest()
	if err != nil {
		return name.Tag{}, fmt.Errorf("image digest: %w", err)
	}
	t, err := name.NewTag(repo + ":" + d.Hex[:12])
	if err != nil {
		return name.Tag{}, fmt.Errorf("image tag: %w", err)
	}
	return t, nil
}
