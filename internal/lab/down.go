package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Down removes everything a lab made: it stops the recorded processes (the
// node supervisors stop their containers), then every process still in the
// lab's cgroups, removes those cgroups, the lab's network namespaces, the
// mount-point directories it created and its state directory. It works from
// the state file when there is one and from the kernel's records (the lab
// cgroup tree, netns names with the lab prefix) when the state is gone, so it
// also cleans up after a kill -9. Idempotent.
func Down(ctx context.Context, e Env, p state.Paths) error {
	st, err := state.LoadState(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.logf("trellis-lab: unreadable state (%v); cleaning from kernel records", err)
	}
	var errs []error
	if st != nil {
		// Nodes first (they stop their pods), then the control plane.
		for _, pr := range st.Processes {
			if strings.HasPrefix(pr.Name, "node/") {
				if proc.Alive(pr.PID, "__node") {
					_ = syscall.Kill(pr.PID, syscall.SIGTERM)
				}
			}
		}
		for _, pr := range st.Processes {
			if strings.HasPrefix(pr.Name, "node/") {
				waitGone(pr.PID, "__node", 15*time.Second)
			}
		}
		for i := len(st.Processes) - 1; i >= 0; i-- {
			pr := st.Processes[i]
			if !strings.HasPrefix(pr.Name, "node/") && len(pr.Argv) > 0 {
				proc.StopPID(pr.PID, filepath.Base(pr.Argv[0]), 5*time.Second)
			}
		}
	}
	if err := proc.KillCgroup(p.CgroupRoot(), 3*time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := proc.RemoveCgroups(p.CgroupRoot()); err != nil {
		errs = append(errs, err)
	}
	names, err := topology.ListLabNetns(p.NetnsPrefix())
	if err != nil {
		errs = append(errs, err)
	}
	if err := topology.DeleteNetns(ctx, names); err != nil {
		errs = append(errs, err)
	}
	// The mount-point directories are shared by every lab on the machine:
	// removing one that another lab's nodes mount over would detach their
	// mounts, so they go only when no other lab runs.
	if st != nil && !otherLabRunning(p) {
		for i := len(st.CreatedDirs) - 1; i >= 0; i-- {
			_ = os.Remove(st.CreatedDirs[i]) // only if still empty
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(p.Root); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", p.Root, err))
		}
	}
	return errors.Join(errs...)
}

func waitGone(pid int, want string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for proc.Alive(pid, want) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
}

// otherLabRunning reports whether a lab other than p's has processes.
func otherLabRunning(p state.Paths) bool {
	roots, _ := filepath.Glob(filepath.Join(proc.CgroupFS, "pids", state.CgroupBase+"*"))
	for _, r := range roots {
		name := filepath.Base(r)
		if name == p.CgroupRoot() || (name != state.CgroupBase && !strings.HasPrefix(name, state.CgroupBase+"-")) {
			continue
		}
		if pids, err := proc.CgroupPIDs(name); err == nil && len(pids) > 0 {
			return true
		}
	}
	return false
}
