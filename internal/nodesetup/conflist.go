package nodesetup

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ConflistNames are the names the agent gives its conflist, by preference.
// Container runtimes use the lexically first CNI config in the directory;
// when a foreign config sorts before ConflistName the agent takes the
// first name here that sorts before every foreign one. It never deletes or
// edits a foreign file.
var ConflistNames = []string{ConflistName, "05-trellis.conflist", "00-trellis.conflist"}

// ErrForeignConfigFirst: a foreign CNI config sorts before every name the
// agent may take, so the runtime would not use Trellis.
var ErrForeignConfigFirst = errors.New("a foreign CNI config sorts before every conflist name Trellis can take")

// IsOwnConflist reports whether data is a conflist whose plugins include
// trellis-cni (so the agent may overwrite or remove it).
func IsOwnConflist(data []byte) bool {
	var c struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(data, &c) != nil {
		return false
	}
	for _, p := range c.Plugins {
		if p.Type == PluginName {
			return true
		}
	}
	return false
}

// ConflistChoice is where the agent writes its conflist.
type ConflistChoice struct {
	// Name is the file name to write.
	Name string
	// Foreign are the other CNI configs in the directory, sorted.
	Foreign []string
	// Stale are the agent's own conflists under other names (to remove
	// once Name is written).
	Stale []string
}

// ChooseConflist reads dir (missing is empty) and picks the agent's
// conflist name: the first of ConflistNames that sorts before every
// foreign CNI config (*.conf, *.conflist, *.json, as libcni reads them).
// ErrForeignConfigFirst when none does.
func ChooseConflist(dir string) (ConflistChoice, error) {
	var ch ConflistChoice
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return ch, fmt.Errorf("read CNI config dir: %w", err)
	}
	own := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !isCNIConfig(name) {
			continue
		}
		if isCandidate(name) {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err == nil && IsOwnConflist(data) {
				own[name] = true
				continue
			}
		}
		ch.Foreign = append(ch.Foreign, name)
	}
	sort.Strings(ch.Foreign)
	for _, cand := range ConflistNames {
		if len(ch.Foreign) == 0 || cand < ch.Foreign[0] {
			ch.Name = cand
			break
		}
	}
	if ch.Name == "" {
		return ch, fmt.Errorf("%w: %s in %s (remove or rename it)", ErrForeignConfigFirst, ch.Foreign[0], dir)
	}
	for name := range own {
		if name != ch.Name {
			ch.Stale = append(ch.Stale, name)
		}
	}
	sort.Strings(ch.Stale)
	return ch, nil
}

func isCNIConfig(name string) bool {
	switch filepath.Ext(name) {
	case ".conf", ".conflist", ".json":
		return !strings.HasPrefix(name, ".")
	}
	return false
}

func isCandidate(name string) bool {
	for _, c := range ConflistNames {
		if c == name {
			return true
		}
	}
	return false
}
