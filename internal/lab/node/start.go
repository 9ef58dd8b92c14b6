package node

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/trellisnet/trellis/internal/atomicfile"
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

// CopyFile copies src to dst atomically: a process running dst (a node's
// agent or plugin) keeps its old binary, the next start gets the new one.
func CopyFile(src, dst string, mode os.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	defer f.Close()
	if err := atomicfile.WriteFrom(dst, f, mode); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return nil
}
