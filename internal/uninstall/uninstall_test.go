package uninstall

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

type fakeSysctls map[string]string

func (f fakeSysctls) Get(p string) (string, error) { return f[p], nil }
func (f fakeSysctls) Set(p, v string) error        { f[p] = v; return nil }

// The first change records the previous value, later ones do not;
// Restore puts it back and removes the record.
func TestRecorderAndRestore(t *testing.T) {
	sys := fakeSysctls{"net/x": "0"}
	file := RecordPath(t.TempDir())
	r := Recorder{Sysctls: sys, File: file}
	for _, v := range []string{"1", "1", "2"} {
		if err := r.Set("net/x", v); err != nil {
			t.Fatal(err)
		}
	}
	if sys["net/x"] != "2" {
		t.Fatalf("value %q", sys["net/x"])
	}
	n, err := Restore(sys, file)
	if err != nil || n != 1 || sys["net/x"] != "0" {
		t.Fatalf("Restore = %d, %v; value %q, want 0", n, err, sys["net/x"])
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("record left: %v", err)
	}
	if n, err := Restore(sys, file); n != 0 || err != nil {
		t.Errorf("second Restore = %d, %v", n, err)
	}
}

// A value already in place records nothing.
func TestRecorderUnchangedRecordsNothing(t *testing.T) {
	sys := fakeSysctls{"net/x": "1"}
	file := filepath.Join(t.TempDir(), RecordName)
	if err := (Recorder{Sysctls: sys, File: file}).Set("net/x", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("record written for an unchanged value: %v", err)
	}
}

func TestParseTables(t *testing.T) {
	out := `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "trellis-policy", "handle": 1}}, {"table": {"family": "ip", "name": "nat", "handle": 2}}]}`
	got, err := parseTables([]byte(out))
	want := []Table{{"inet", "trellis-policy"}, {"ip", "nat"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseTables = %v, %v; want %v", got, err, want)
	}
}

type fakeTables struct{ have, deleted []Table }

func (f *fakeTables) List(context.Context) ([]Table, error) { return f.have, nil }
func (f *fakeTables) Delete(_ context.Context, t Table) error {
	f.deleted = append(f.deleted, t)
	return nil
}

// Only tables whose name starts with "trellis" are deleted.
func TestRemoveTablesOnlyTrellis(t *testing.T) {
	f := &fakeTables{have: []Table{{"inet", "trellis-policy"}, {"ip", "trellis-masq"}, {"ip", "kube-proxy"}, {"inet", "firewalld"}}}
	n, err := removeTables(context.Background(), f)
	if err != nil || n != 2 || !reflect.DeepEqual(f.deleted, []Table{{"inet", "trellis-policy"}, {"ip", "trellis-masq"}}) {
		t.Errorf("removeTables = %d, %v; deleted %v", n, err, f.deleted)
	}
}

// Trellis's conflists go, a foreign file under a Trellis name stays.
func TestRemoveConflists(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10-trellis.conflist", `{"plugins":[{"type":"trellis-cni"}]}`)
	write("05-trellis.conflist", `{"plugins":[{"type":"bridge"}]}`)
	n, err := removeConflists(context.Background(), dir)
	if err != nil || n != 1 {
		t.Fatalf("removeConflists = %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "05-trellis.conflist")); err != nil {
		t.Errorf("foreign file removed: %v", err)
	}
}
