package node

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/trellisnet/trellis/internal/lab/proc"
)

// cgroupMounts are the v1 hierarchies remounted inside a node's mount
// namespace (a fresh sysfs hides the machine's /sys/fs/cgroup).
var cgroupMounts = [][2]string{
	{"cpu", "cpu"}, {"cpuacct", "cpuacct"}, {"cpuset", "cpuset"}, {"memory", "memory"},
	{"devices", "devices"}, {"freezer", "freezer"}, {"blkio", "blkio"}, {"pids", "pids"},
	{"systemd", "none,name=systemd"},
}

// setupNodeMounts runs inside the node's private mount and network
// namespaces: a sysfs of the node's own network namespace, the cgroup
// hierarchies, and the node-private directories over the standard paths.
func setupNodeMounts(s Spec) error {
	// Never mount over the machine's own paths: refuse unless this process
	// is in a mount and network namespace other than those of the lab
	// process that started it (Spawn passes them in the environment).
	for _, kind := range []string{"mnt", "net"} {
		self, err := os.Readlink("/proc/self/ns/" + kind)
		host := os.Getenv(proc.HostNSEnv(kind))
		if err != nil || host == "" || self == host {
			return fmt.Errorf("node %s: refusing to set up mounts: not in a %s namespace of its own (%s vs %q)", s.Name, kind, self, host)
		}
	}
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("mounting sysfs: %w", err)
	}
	if err := syscall.Mount("cgroup-root", proc.CgroupFS, "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("mounting tmpfs on %s: %w", proc.CgroupFS, err)
	}
	for _, c := range cgroupMounts {
		d := filepath.Join(proc.CgroupFS, c[0])
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
		if err := syscall.Mount("cgroup", d, "cgroup", 0, c[1]); err != nil {
			return fmt.Errorf("mounting cgroup %s: %w", c[1], err)
		}
	}
	if d := filepath.Join(proc.CgroupFS, "unified"); os.MkdirAll(d, 0o755) == nil {
		_ = syscall.Mount("cgroup2", d, "cgroup2", 0, "") // optional
	}
	for _, b := range s.Binds {
		if err := syscall.Mount(b.Src, b.Dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s on %s: %w", b.Src, b.Dst, err)
		}
	}
	return nil
}
