package sysctl

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestProcWritesOnlyWhenDifferent(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "net", "ipv4", "ip_forward")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := Proc{Root: root}
	if err := s.Set("net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "1" {
		t.Errorf("sysctl file = %q, want 1", b)
	}
	if v, err := s.Get("net/ipv4/ip_forward"); err != nil || v != "1" {
		t.Errorf("Get = %q, %v; want 1", v, err)
	}
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(p, past, past); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); !fi.ModTime().Equal(past) {
		t.Errorf("unchanged value rewritten (mtime %v, want %v)", fi.ModTime(), past)
	}
	if err := s.Set("net/ipv4/missing/x", "1"); err == nil {
		t.Error("writing a missing sysctl succeeded")
	}
}
