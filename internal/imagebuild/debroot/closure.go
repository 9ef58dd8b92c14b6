// Package debroot takes host tools for the Trellis image from Debian
// packages: it resolves and downloads the packages (apt-get download, into a
// cache keyed by file name, which holds the version), unpacks them
// (dpkg-deb -x), and collects from the unpacked tree exactly the files the
// tools need to run: each binary, the shared libraries it links
// (DT_NEEDED, recursively), the dynamic loader (PT_INTERP) and the symbolic
// links on the way, as imagebuild entries.
package debroot

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/trellisnet/trellis/internal/imagebuild"
)

// LibDirs are where the loader finds libraries without an ld.so.cache
// (Debian's multiarch directories first, as its glibc searches them).
var LibDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// Closure returns the entries that make bins (absolute paths inside root)
// runnable in an image: the binaries, every library they need, the
// dynamic loader and every symlink on the way. A library no directory of
// LibDirs holds is an error naming it and who needs it.
func Closure(root string, bins []string) ([]imagebuild.Entry, error) {
	c := closure{root: root, seen: map[string]bool{}}
	for _, b := range bins {
		c.add(b, "")
	}
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	sort.Slice(c.out, func(i, j int) bool { return c.out[i].Path < c.out[j].Path })
	return c.out, nil
}

type closure struct {
	root string
	seen map[string]bool
	out  []imagebuild.Entry
	errs []error
}

func (c *closure) host(p string) string { return filepath.Join(c.root, filepath.FromSlash(p)) }

// add records p (an absolute path in the image) and what it needs.
func (c *closure) add(p, neededBy string) {
	if c.seen[p] {
		return
	}
	c.seen[p] = true
	fi, err := os.Lstat(c.host(p))
	if err != nil {
		if neededBy != "" {
			err = fmt.Errorf("%s (needed by %s): %w", p, neededBy, err)
		}
		c.errs = append(c.errs, err)
		return
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(c.host(p))
		if err != nil {
			c.errs = append(c.errs, err)
			return
		}
		c.out = append(c.out, imagebuild.Entry{Path: p, Kind: imagebuild.Symlink, Target: target})
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		c.add(path.Clean(target), p)
	case fi.Mode().IsRegular():
		data, err := os.ReadFile(c.host(p))
		if err != nil {
			c.errs = append(c.errs, err)
			return
		}
		c.out = append(c.out, imagebuild.Entry{Path: p, Data: data, Executable: fi.Mode()&0o111 != 0})
		c.addDeps(p)
	default:
		c.errs = append(c.errs, fmt.Errorf("%s: not a regular file or symlink", p))
	}
}

// addDeps adds the loader and libraries of the ELF file p (nothing for
// other files).
func (c *closure) addDeps(p string) {
	f, err := elf.Open(c.host(p))
	if err != nil {
		return // not ELF: a script or data file needs nothing more
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(prog.Open())
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("%s: read PT_INTERP: %w", p, err))
			continue
		}
		if n := len(b); n > 0 && b[n-1] == 0 {
			b = b[:n-1]
		}
		c.add(string(b), p)
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: DT_NEEDED: %w", p, err))
		return
	}
	for _, lib := range libs {
		found := ""
		for _, dir := range LibDirs {
			if _, err := os.Lstat(c.host(path.Join(dir, lib))); err == nil {
				found = path.Join(dir, lib)
				break
			}
		}
		if found == "" {
			c.errs = append(c.errs, fmt.Errorf("%s needs %s, which no unpacked package holds (in %v)", p, lib, LibDirs))
			continue
		}
		c.add(found, p)
	}
}
