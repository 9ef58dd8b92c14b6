package probe

import (
	"os"
	"os/exec"
	"testing"
)

// The container's own process comes first even when cgroup.procs lists a
// child of it (an nft the agent runs) before it.
func TestRootFirst(t *testing.T) {
	child := exec.Command("sleep", "5")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	got := rootFirst([]int{child.Process.Pid, os.Getpid()})
	if got[0] != os.Getpid() {
		t.Errorf("rootFirst = %v, want the parent %d first", got, os.Getpid())
	}
}
