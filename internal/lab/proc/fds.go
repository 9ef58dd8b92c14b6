package proc

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// CloseInheritedFiles marks every file descriptor above stderr close-on-exec,
// so that nothing the lab starts inherits what the lab itself inherited. A
// lab brought up under `flock LOCK trellis-lab up` would otherwise hand the
// lock's descriptor to etcd, the API server and every node, and hold the lock
// until `down`.
func CloseInheritedFiles() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing open files: %w", err)
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}
