package probe

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestParsePortProtoAndPodRef(t *testing.T) {
	if p, proto, err := ParsePortProto("81/UDP"); err != nil || p != 81 || proto != "udp" {
		t.Errorf("81/UDP = %d %s %v", p, proto, err)
	}
	if _, proto, err := ParsePortProto("80/sctp"); err != nil || proto != "sctp" {
		t.Errorf("80/sctp = %s %v", proto, err)
	}
	for _, bad := range []string{"0/tcp", "http/tcp", "80/icmp", "70000/udp"} {
		if _, _, err := ParsePortProto(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, _, err := SplitPodRef("x"); err == nil {
		t.Error("pod ref without namespace accepted")
	}
	if ns, n, err := SplitPodRef("a/b"); err != nil || ns != "a" || n != "b" {
		t.Errorf("a/b = %s %s %v", ns, n, err)
	}
}

func TestMatrixDiffAndReport(t *testing.T) {
	pods := []string{"x/a", "y/b"}
	exp := NewMatrix(pods, true)
	obs := NewMatrix(pods, true)
	obs.Set("x/a", "y/b", false)
	if d := exp.Diff(obs); d != 1 {
		t.Fatalf("Diff = %d, want 1", d)
	}
	r := Report(exp, obs)
	if !strings.Contains(r, "X!") || !strings.Contains(r, "1 of 4 cells wrong") {
		t.Errorf("report does not mark the wrong cell:\n%s", r)
	}
}

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
