package connectivity

import (
	"context"
	"errors"
	"strings"
	"sync"
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

// flaky answers "no" for the first misses probes of each pair, then "yes";
// a probe to "x/gone" cannot be attempted.
type flaky struct {
	mu     sync.Mutex
	misses int
	seen   map[[2]string]int
}

func (f *flaky) Probe(_ context.Context, from, to string, _ int, _ string) (bool, error) {
	if to == "x/gone" {
		return false, errors.New("no such pod")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := [2]string{from, to}
	f.seen[k]++
	return f.seen[k] > f.misses, nil
}

func TestExpectReprobesUntilTheTableMatches(t *testing.T) {
	pods := []string{"x/a", "y/b"}
	ctx := context.Background()
	obs, err := Expect(ctx, &flaky{misses: 1, seen: map[[2]string]int{}}, NewMatrix(pods, true), 80, "tcp", 3)
	if err != nil || NewMatrix(pods, true).Diff(obs) != 0 {
		t.Fatalf("a cell that answers on the second attempt: diff %d, err %v", NewMatrix(pods, true).Diff(obs), err)
	}
	obs, err = Expect(ctx, &flaky{misses: 5, seen: map[[2]string]int{}}, NewMatrix(pods, true), 80, "tcp", 2)
	if err != nil || NewMatrix(pods, true).Diff(obs) != 4 {
		t.Fatalf("cells that never answer: diff %d, err %v; want 4 wrong cells", NewMatrix(pods, true).Diff(obs), err)
	}
	if _, err := Expect(ctx, &flaky{seen: map[[2]string]int{}}, NewMatrix([]string{"x/a", "x/gone"}, true), 80, "tcp", 3); err == nil {
		t.Error("a probe that could not be attempted was not reported")
	}
}
