// Package proc starts, finds and stops the lab's processes: detached spawns
// placed in the lab's cgroups before they exec (the kernel's record of what
// the lab must stop), the cgroup trees themselves, and small command helpers.
package proc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupControllers are the v1 hierarchies lab processes are placed in. The
// memory and cpuset hierarchies are left alone (cpuset needs explicit setup,
// memory accounting belongs to whoever runs the lab).
var cgroupControllers = []string{"pids", "freezer", "systemd"}

// CgroupFS is where the cgroup v1 hierarchies are mounted.
const CgroupFS = "/sys/fs/cgroup"

// JoinCgroup moves the calling process into the cgroup path (relative to
// the hierarchy roots) in every controller of cgroupControllers, creating the
// cgroups as needed.
func JoinCgroup(group string) error {
	for _, c := range cgroupControllers {
		d := filepath.Join(CgroupFS, c, group)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", d, err)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("joining cgroup %s: %w", d, err)
		}
	}
	return nil
}

// CgroupPIDs lists every process in the cgroup path group, recursively.
func CgroupPIDs(group string) ([]int, error) {
	if group == "" {
		return nil, errors.New("refusing to list the root cgroup")
	}
	root := filepath.Join(CgroupFS, "pids", group)
	var pids []int
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil // cgroup removed meanwhile
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing lab processes in %s: %w", root, err)
	}
	return pids, nil
}

// KillCgroup stops every process in the cgroup path group: SIGTERM, then
// SIGKILL after grace, until none is left or the deadline passes.
func KillCgroup(group string, grace time.Duration) error {
	pids, err := CgroupPIDs(group)
	if err != nil {
		return err
	}
	for _, p := range pids {
		if p != os.Getpid() {
			_ = syscall.Kill(p, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(grace + 10*time.Second)
	killAt := time.Now().Add(grace)
	for {
		pids, err = CgroupPIDs(group)
		if err != nil {
			return err
		}
		left := 0
		for _, p := range pids {
			if p == os.Getpid() {
				continue
			}
			left++
			if time.Now().After(killAt) {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes in cgroup %s did not stop", left, group)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RemoveCgroups removes the lab's (now empty) cgroup tree root in every
// hierarchy, including the cgroups kubelet and runc created for containers.
func RemoveCgroups(rootName string) error {
	if rootName == "" {
		return errors.New("refusing to remove the root cgroup")
	}
	entries, err := os.ReadDir(CgroupFS)
	if err != nil {
		return fmt.Errorf("reading %s: %w", CgroupFS, err)
	}
	var errs []error
	for _, e := range entries {
		root := filepath.Join(CgroupFS, e.Name(), rootName)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- { // children first
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// Spawn starts argv detached (own session), inside the lab cgroup group and,
// if netns is set, the named network namespace; newMountNS also gives it a
// private mount namespace. Output goes to logFile. The returned PID is the
// process's own: the lab's exec helper replaces itself with argv.
func Spawn(labBin, group, netns string, newMountNS bool, logFile string, argv []string, env []string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return 0, fmt.Errorf("creating log dir: %w", err)
	}
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("opening log %s: %w", logFile, err)
	}
	defer lf.Close()
	args := []string{"__exec", "--cgroup", group}
	if netns != "" {
		args = append(args, "--netns", netns)
	}
	if newMountNS {
		args = append(args, "--new-mount-ns")
	}
	args = append(args, "--")
	args = append(args, argv...)
	cmd := exec.Command(labBin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	for _, kind := range []string{"mnt", "net"} {
		if id, err := os.Readlink("/proc/self/ns/" + kind); err == nil {
			cmd.Env = append(cmd.Env, HostNSEnv(kind)+"="+id)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}

// ExecInto is the body of `trellis-lab __exec`: join the cgroup, then replace
// this process with argv, entered into netns / a new mount namespace through
// nsenter and unshare (util-linux), so the PID the lab recorded stays valid.
func ExecInto(group, netns string, newMountNS bool, argv []string) error {
	if len(argv) == 0 {
		return errors.New("__exec: no command")
	}
	if err := JoinCgroup(group); err != nil {
		return err
	}
	full := argv
	if newMountNS {
		full = append([]string{"unshare", "--mount", "--propagation", "private", "--"}, full...)
	}
	if netns != "" {
		full = append([]string{"nsenter", "--net=/run/netns/" + netns, "--"}, full...)
	}
	path, err := exec.LookPath(full[0])
	if err != nil {
		return fmt.Errorf("__exec: %w", err)
	}
	return syscall.Exec(path, full, os.Environ())
}

// Alive reports whether pid runs and its command line mentions want.
func Alive(pid int, want string) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
			return false
		}
	}
	return strings.Contains(strings.ReplaceAll(string(data), "\x00", " "), want)
}

// StopPID sends SIGTERM to a recorded process (only if it is still the
// process recorded: its command line must mention want), then SIGKILL.
func StopPID(pid int, want string, grace time.Duration) {
	if !Alive(pid, want) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !Alive(pid, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// HostNSEnv names the variable through which Spawn tells a child which
// namespace of kind ("mnt", "net") the lab itself runs in.
func HostNSEnv(kind string) string { return "TRELLIS_LAB_HOST_" + strings.ToUpper(kind) + "NS" }

// EnsureNodeCgroups creates the cgroup path group in every v1 hierarchy (the
// kubelet's cgroupRoot must exist in all of them); in cpuset the new cgroups
// inherit their parent's CPUs and memory nodes.
func EnsureNodeCgroups(group string) error {
	entries, err := os.ReadDir(CgroupFS)
	if err != nil {
		return fmt.Errorf("reading %s: %w", CgroupFS, err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "unified" {
			continue
		}
		parent := filepath.Join(CgroupFS, e.Name())
		if _, err := os.Stat(filepath.Join(parent, "cgroup.procs")); err != nil {
			continue // not a cgroup v1 hierarchy
		}
		for _, part := range strings.Split(group, "/") {
			d := filepath.Join(parent, part)
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("creating cgroup %s: %w", d, err)
			}
			if e.Name() == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					cur, _ := os.ReadFile(filepath.Join(d, f))
					if strings.TrimSpace(string(cur)) != "" {
						continue
					}
					v, err := os.ReadFile(filepath.Join(parent, f))
					if err != nil {
						return fmt.Errorf("reading %s: %w", filepath.Join(parent, f), err)
					}
					if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
						return fmt.Errorf("initialising %s: %w", filepath.Join(d, f), err)
					}
				}
			}
			parent = d
		}
	}
	return nil
}
