package connectivity

import (
	"errors"
	"testing"

	utilexec "k8s.io/client-go/util/exec"
)

func TestExecVerdict(t *testing.T) {
	exit := func(code int) error { return utilexec.CodeExitError{Err: errors.New("exit"), Code: code} }
	for _, c := range []struct {
		name    string
		err     error
		stderr  string
		ok, bad bool
	}{
		{"connected", nil, "", true, false},
		{"timeout", exit(1), "TIMEOUT\n", false, false},
		{"refused", exit(1), "REFUSED\n", false, false},
		{"no route", exit(1), "OTHER: dial tcp: no route to host\n", false, false},
		{"bad arguments are no verdict", exit(1), "UNKNOWN: missing port\n", false, true},
		{"no agnhost in the pod", exit(127), "exec: \"/agnhost\": not found", false, true},
		{"exec transport failed", errors.New("upgrade failed"), "", false, true},
	} {
		ok, err := execVerdict(c.err, c.stderr, "x/a")
		if ok != c.ok || (err != nil) != c.bad {
			t.Errorf("%s: got (%v, %v), want ok=%v error=%v", c.name, ok, err, c.ok, c.bad)
		}
	}
}
