package debroot

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Deb is one downloaded package.
type Deb struct {
	Package string
	Version string
	// File is the .deb in the cache (its name holds package and version).
	File string
}

// Resolve returns roots and everything they depend on (Depends and
// Pre-Depends, recursively; no Recommends), sorted.
func Resolve(ctx context.Context, roots []string) ([]string, error) {
	args := append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}, roots...)
	out, err := exec.CommandContext(ctx, "apt-cache", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache depends %s: %w (run apt-get update?)", strings.Join(roots, " "), err)
	}
	return parseDepends(out), nil
}

// parseDepends reads the package names of `apt-cache depends --recurse`
// (unindented lines; virtual packages appear as <name> and are skipped).
func parseDepends(out []byte) []string {
	set := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == ' ' || strings.HasPrefix(l, "<") {
			continue
		}
		set[strings.TrimSpace(l)] = true
	}
	pkgs := make([]string, 0, len(set))
	for p := range set {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	return pkgs
}

// Fetch makes sure cache holds the candidate version of every package
// (apt-get download, only for files not there yet) and returns them.
func Fetch(ctx context.Context, cache string, pkgs []string) ([]Deb, error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("create deb cache: %w", err)
	}
	out, err := exec.CommandContext(ctx, "apt-cache", append([]string{"show", "--no-all-versions"}, pkgs...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %s: %w (run apt-get update?)", strings.Join(pkgs, " "), err)
	}
	found := parseShow(out)
	var debs []Deb
	var missing []string
	for _, p := range pkgs {
		s, ok := found[p]
		if !ok {
			return nil, fmt.Errorf("apt-cache show: no Version/Filename for %s", p)
		}
		d := Deb{Package: p, Version: s.version, File: filepath.Join(cache, debName(p, s.version, s.filename))}
		if _, err := os.Stat(d.File); err != nil {
			missing = append(missing, p+"="+s.version)
		}
		debs = append(debs, d)
	}
	if len(missing) > 0 {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, missing...)...)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download %s: %w: %s", strings.Join(missing, " "), err, out)
		}
	}
	for _, d := range debs {
		if _, err := os.Stat(d.File); err != nil {
			return nil, fmt.Errorf("%s %s: downloaded, but %w", d.Package, d.Version, err)
		}
	}
	return debs, nil
}

// debName is the file name apt-get download gives the package: the epoch's
// colon is escaped, the architecture comes from the pool file name.
func debName(pkg, version, poolFile string) string {
	base := strings.TrimSuffix(path.Base(poolFile), ".deb")
	arch := base[strings.LastIndex(base, "_")+1:]
	return pkg + "_" + strings.ReplaceAll(version, ":", "%3a") + "_" + arch + ".deb"
}

type shown struct{ version, filename string }

// parseShow reads the Package, Version and Filename of each paragraph of
// `apt-cache show --no-all-versions` (the candidate versions).
func parseShow(out []byte) map[string]shown {
	res := map[string]shown{}
	var pkg string
	var cur shown
	flush := func() {
		if pkg != "" && cur.version != "" && cur.filename != "" {
			if _, dup := res[pkg]; !dup {
				res[pkg] = cur
			}
		}
		pkg, cur = "", shown{}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" {
			flush()
			continue
		}
		if v, ok := strings.CutPrefix(l, "Package: "); ok {
			pkg = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "Version: "); ok {
			cur.version = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "Filename: "); ok {
			cur.filename = strings.TrimSpace(v)
		}
	}
	flush()
	return res
}

// Unpack extracts every package's files into dir (dpkg-deb -x; maintainer
// scripts do not run).
func Unpack(ctx context.Context, debs []Deb, dir string) error {
	for _, d := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", d.File, dir).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -x %s: %w: %s", d.File, err, out)
		}
	}
	return nil
}

// Manifest lists the packages as "name version" lines (the record of what
// went into the image).
func Manifest(debs []Deb) []byte {
	var b bytes.Buffer
	for _, d := range debs {
		fmt.Fprintf(&b, "%s %s\n", d.Package, d.Version)
	}
	return b.Bytes()
}

// ParseManifest reads what Manifest wrote.
func ParseManifest(data []byte) ([]Deb, error) {
	var debs []Deb
	for i, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: %q is not \"package version\"", i+1, l)
		}
		debs = append(debs, Deb{Package: f[0], Version: f[1]})
	}
	return debs, nil
}

// FetchPinned makes sure cache holds exactly these package versions
// (apt-get download pkg=version for those it lacks) and returns them with
// their files.
func FetchPinned(ctx context.Context, cache string, pinned []Deb) ([]Deb, error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("create deb cache: %w", err)
	}
	find := func(d Deb) string {
		m, _ := filepath.Glob(filepath.Join(cache, d.Package+"_"+strings.ReplaceAll(d.Version, ":", "%3a")+"_*.deb"))
		if len(m) == 1 {
			return m[0]
		}
		return ""
	}
	var missing []string
	for _, d := range pinned {
		if find(d) == "" {
			missing = append(missing, d.Package+"="+d.Version)
		}
	}
	if len(missing) > 0 {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, missing...)...)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download %s: %w: %s", strings.Join(missing, " "), err, out)
		}
	}
	out := make([]Deb, 0, len(pinned))
	for _, d := range pinned {
		if d.File = find(d); d.File == "" {
			return nil, fmt.Errorf("%s %s: no unique .deb in %s", d.Package, d.Version, cache)
		}
		out = append(out, d)
	}
	return out, nil
}
