package nodesetup

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/podlink"
)

type fakeReporter struct{ active map[string]string }

func (f *fakeReporter) Report(_ context.Context, reason, msg string) { f.active[reason] = msg }
func (f *fakeReporter) Clear(reason string)                          { delete(f.active, reason) }

// A missing pod CIDR is reported (NotReady, Event, metric via the
// reporter) and cleared once the Node has one.
func TestNoPodCIDRIsReportedAndCleared(t *testing.T) {
	f := newFixture(t, testNode(), config.ModeAuto)
	r := &fakeReporter{active: map[string]string{}}
	f.c.SetReporter(r)
	if err := f.c.Sync(context.Background()); err == nil {
		t.Fatal("Sync without pod CIDR returned nil")
	}
	if !strings.Contains(r.active[ReasonNoPodCIDR], "--allocate-node-cidrs") {
		t.Errorf("reported %v", r.active)
	}
	n := testNode("10.244.1.0/24")
	if err := f.idx.Update(n); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(r.active) != 0 {
		t.Errorf("problems after the pod CIDR came: %v", r.active)
	}
}

// A foreign conflist that sorts after ours stays and ours is written; one
// that sorts before 10- makes the agent take 05- (and remove its own 10-);
// one that sorts before every name Trellis can take leaves the node not
// ready, reported, with no Trellis conflist written and the foreign file
// untouched.
func TestForeignConflists(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, testNode("10.244.1.0/24"), config.ModeAuto)
	r := &fakeReporter{active: map[string]string{}}
	f.c.SetReporter(r)
	dir := f.cfg.CNIConfDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	foreign := []byte(`{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"}]}`)
	write := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), foreign, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(name string) bool { _, err := os.Stat(filepath.Join(dir, name)); return err == nil }

	write("87-podman.conflist")
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists(ConflistName) || !exists("87-podman.conflist") {
		t.Fatalf("want ours and the foreign file: ours %v, foreign %v", exists(ConflistName), exists("87-podman.conflist"))
	}

	write("10-calico.conflist")
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists("05-trellis.conflist") || exists(ConflistName) || !exists("10-calico.conflist") {
		t.Fatalf("want 05-trellis.conflist only, foreign kept: 05 %v, 10-trellis %v, calico %v",
			exists("05-trellis.conflist"), exists(ConflistName), exists("10-calico.conflist"))
	}

	write("00-aaa.conflist")
	if err := f.c.Sync(ctx); err == nil {
		t.Fatal("Sync with a foreign config sorting first returned nil")
	}
	if !strings.Contains(r.active[ReasonForeignCNIConfig], "00-aaa.conflist") {
		t.Errorf("reported %v", r.active)
	}
	st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil || st.Ready {
		t.Errorf("node state %+v, %v: want not ready", st, err)
	}
	if !exists("00-aaa.conflist") || exists("00-trellis.conflist") {
		t.Error("the foreign file was touched or a Trellis conflist written under a name that does not win")
	}

	if err := os.Remove(filepath.Join(dir, "00-aaa.conflist")); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.active[ReasonForeignCNIConfig]; ok {
		t.Error("problem not cleared once the foreign config went")
	}
}
