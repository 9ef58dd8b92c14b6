package proc

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCloseInheritedFilesKeepsThemFromChildren(t *testing.T) {
	fd, err := unix.Open(filepath.Join(t.TempDir(), "lock"), unix.O_CREAT|unix.O_RDWR, 0o600) // no O_CLOEXEC, as flock(1) opens it
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	inherited := func() bool {
		return exec.Command("/bin/sh", "-c", fmt.Sprintf("test -e /proc/self/fd/%d", fd)).Run() == nil
	}
	if !inherited() {
		t.Fatalf("control: a child does not see fd %d even before the call; the test proves nothing", fd)
	}
	if err := CloseInheritedFiles(); err != nil {
		t.Fatal(err)
	}
	if inherited() {
		t.Errorf("fd %d still reaches a child after CloseInheritedFiles", fd)
	}
}
