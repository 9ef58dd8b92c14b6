package uninstall

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// RecordName is the file in the state directory that holds the values
// sysctls had before Trellis changed them.
const RecordName = "sysctl-restore.json"

// RecordPath is the record file in stateDir.
func RecordPath(stateDir string) string { return filepath.Join(stateDir, RecordName) }

// Sysctls reads and sets kernel parameters.
type Sysctls interface {
	Get(path string) (string, error)
	Set(path, value string) error
}

// Recorder is a Sysctls that, before changing a parameter for the first
// time, records its previous value in File, so that uninstall can put it
// back. A value recorded once is kept (a restart of the agent finds its own
// value set and must not record that).
type Recorder struct {
	Sysctls
	File string
}

// Set records the previous value (once) and sets value.
func (r Recorder) Set(path, value string) error {
	cur, err := r.Get(path)
	if err != nil {
		return err
	}
	if cur == value {
		return nil
	}
	rec, err := readRecord(r.File)
	if err != nil {
		return err
	}
	if _, ok := rec[path]; !ok {
		rec[path] = cur
		data, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return fmt.Errorf("encode sysctl record: %w", err)
		}
		if err := atomicfile.Write(r.File, append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("write sysctl record: %w", err)
		}
	}
	return r.Sysctls.Set(path, value)
}

func readRecord(file string) (map[string]string, error) {
	rec := map[string]string{}
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read sysctl record: %w", err)
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("parse sysctl record %s: %w", file, err)
	}
	return rec, nil
}

// Restore sets every recorded sysctl back to its previous value and removes
// the record. It returns how many it restored. Forwarding switches go back
// first (restoreOrder), then per-interface values such as accept_ra, so
// that no interface is left with accept_ra 1 while forwarding is still on;
// a per-interface value of an interface that is gone is skipped.
func Restore(s Sysctls, file string) (int, error) {
	rec, err := readRecord(file)
	if err != nil {
		return 0, err
	}
	paths := make([]string, 0, len(rec))
	for p := range rec {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool {
		if a, b := restoreOrder(paths[i]), restoreOrder(paths[j]); a != b {
			return a < b
		}
		return paths[i] < paths[j]
	})
	n := 0
	for _, p := range paths {
		err := s.Set(p, rec[p])
		if err != nil && perInterface(p) && errors.Is(err, fs.ErrNotExist) {
			continue // the interface went away: nothing to put back
		}
		if err != nil {
			return n, fmt.Errorf("restore %s=%s: %w", p, rec[p], err)
		}
		n++
	}
	if _, err := removeFile(file); err != nil {
		return n, err
	}
	return n, nil
}

// restoreOrder ranks a sysctl path for Restore: the forwarding switches
// (net/ipv4/ip_forward, net/ipv6/conf/all/forwarding) before the rest.
func restoreOrder(path string) int {
	if path == "net/ipv4/ip_forward" || strings.HasSuffix(path, "/all/forwarding") {
		return 0
	}
	return 1
}

// perInterface reports whether path is a value of one interface
// (net/ipv4/conf/<if>/..., net/ipv6/conf/<if>/...), which goes with it.
func perInterface(path string) bool {
	for _, pre := range []string{"net/ipv4/conf/", "net/ipv6/conf/"} {
		if rest, ok := strings.CutPrefix(path, pre); ok {
			name, _, _ := strings.Cut(rest, "/")
			return name != "all" && name != "default"
		}
	}
	return false
}
