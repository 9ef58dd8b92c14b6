package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func run(args ...string) error {
	c := New()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	return c.Execute()
}

func TestProbeUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"probe", "x/a", "y/b"},            // missing PORT/PROTO
		{"probe", "x/a", "y/b", "80/icmp"}, // bad protocol
		{"probe", "x/a", "y/b", "http"},    // bad port
		{"matrix", "--port", "99999/tcp"},  // bad port
		{"matrix", "--transport", "ssh"},   // unknown transport
	} {
		err := run(args...)
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != 2 {
			t.Errorf("%v: got %v, want exit status 2", args, err)
		}
	}
}

func TestBadLabNameRefused(t *testing.T) {
	if err := run("--name", "Bad_Name", "status"); err == nil {
		t.Error("bad lab name accepted")
	}
}

func TestCommandsWithoutALabSayHow(t *testing.T) {
	t.Setenv("TRELLIS_LAB_DIR", t.TempDir())
	for _, args := range [][]string{{"kubeconfig"}, {"restart-agent", "node1"}, {"stop-apiserver"}, {"logs", "node1"},
		{"probe", "x/p", "10.0.0.1", "80/tcp"}, {"matrix"}, {"bench-pods"}, {"capture"}, {"tor", "--", "show", "route"}} {
		err := run(args...)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("trellis-lab up")) {
			t.Errorf("%v without a lab: %v", args, err)
		}
	}
}

func TestSplitLabNameTakesOnlyTheLabsFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		name string
		rest []string
	}{
		{[]string{"--name", "x", "--", "get", "pods"}, "x", []string{"get", "pods"}},
		{[]string{"--name=y", "--", "-n", "kube-system", "get", "pods"}, "y", []string{"-n", "kube-system", "get", "pods"}},
		{[]string{"--", "--name", "not-ours"}, "", []string{"--name", "not-ours"}},
		{[]string{"get", "nodes"}, "", []string{"get", "nodes"}},
		{nil, "", nil},
	} {
		name, rest, err := splitLabName(c.args)
		if err != nil || name != c.name || strings.Join(rest, " ") != strings.Join(c.rest, " ") {
			t.Errorf("splitLabName(%q) = %q, %q, %v; want %q, %q", c.args, name, rest, err, c.name, c.rest)
		}
	}
	if _, _, err := splitLabName([]string{"--name"}); err == nil {
		t.Error("--name without a value accepted")
	}
}
