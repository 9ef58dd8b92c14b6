package node

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
)

// Start writes node s's files (if write) and spawns its supervisor.
func Start(p state.Paths, st *state.State, labBin string, s Spec, write bool) error {
	if write {
		if err := WriteFiles(p, s); err != nil {
			return err
		}
	}
	if err := proc.EnsureNodeCgroups(s.Group); err != nil {
		return err
	}
	h, err := st.Topology.Node(s.Name)
	if err != nil {
		return err
	}
	argv := []string{labBin, "__node", "--spec", filepath.Join(s.Dir, "node.json")}
	log := filepath.Join(s.Dir, "logs", "supervisor.log")
	pid, err := proc.Spawn(labBin, s.Group+"/daemons", h.Netns, true, log, argv, nil)
	if err != nil {
		return err
	}
	st.SetProcess(state.Process{Name: "node/" + s.Name, Group: s.Group, PID: pid, Argv: argv, Log: log})
	return st.Save(p)
}

// CopyFile copies src to dst (replacing it through a temporary file).
func CopyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(dst), err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return os.Rename(tmp, dst)
}
