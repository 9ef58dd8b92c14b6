package ipam

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestStorePersistsAndSerializes(t *testing.T) {
	dir := t.TempDir()
	ranges := []netip.Prefix{mustPrefix("10.5.0.0/24")}
	var wg sync.WaitGroup
	got := make([]netip.Addr, 60)
	errs := make([]error, 60)
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := NewStore(dir, "net") // separate lock fds, as separate processes have
			errs[i] = st.Update(context.Background(), func(s *State) error {
				a, _, err := s.Allocate(key(i), ranges)
				if err == nil {
					got[i] = a[0]
				}
				return err
			})
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, a := range got {
		if errs[i] != nil {
			t.Fatalf("update %d: %v", i, errs[i])
		}
		if seen[a] {
			t.Fatalf("%s allocated twice", a)
		}
		seen[a] = true
	}
	var n int
	if err := NewStore(dir, "net").View(context.Background(), func(s *State) error {
		n = len(s.Allocations)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 60 {
		t.Fatalf("reloaded store has %d allocations, want 60", n)
	}
}

func TestStoreFailedUpdateWritesNothing(t *testing.T) {
	dir := t.TempDir()
	st := NewStore(dir, "net")
	boom := errors.New("boom")
	err := st.Update(context.Background(), func(s *State) error {
		s.Allocate(key(1), []netip.Prefix{mustPrefix("10.5.0.0/24")})
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	entries, _ := filepath.Glob(filepath.Join(dir, "net", entryPrefix+"*"))
	if len(entries) != 0 {
		t.Fatalf("allocation recorded despite error: %v", entries)
	}
}

func TestStoreRefusesCorruptState(t *testing.T) {
	dir := t.TempDir()
	st := NewStore(dir, "net")
	if err := os.MkdirAll(st.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.Dir(), entryPrefix+"10.0.0.300_c_eth0"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := st.Update(context.Background(), func(s *State) error { return nil })
	if err == nil {
		t.Fatal("corrupt state accepted")
	}
}

func TestStoreLockTimeout(t *testing.T) {
	dir := t.TempDir()
	holder := NewStore(dir, "net")
	waiter := NewStore(dir, "net")
	waiter.LockTimeout = 50 * time.Millisecond
	release := make(chan struct{})
	started := make(chan struct{})
	go holder.Update(context.Background(), func(*State) error {
		close(started)
		<-release
		return nil
	})
	<-started
	err := waiter.Update(context.Background(), func(*State) error { return nil })
	close(release)
	if !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("expected lock timeout, got %v", err)
	}
}

func TestEntryNameRoundTrip(t *testing.T) {
	for _, a := range []Allocation{
		{Key: Key{ContainerID: "0123abcdef", IfName: "eth0"}, Addr: netip.MustParseAddr("10.0.0.5")},
		{Key: Key{ContainerID: "pod_with_under.scores-and%pct", IfName: "net/1 x"}, Addr: netip.MustParseAddr("fd00::1:5")},
	} {
		name, err := entryName(a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseEntry(name)
		if err != nil || got != a {
			t.Fatalf("%s: round trip gave %+v, %v; want %+v", name, got, err, a)
		}
	}
	if _, err := entryName(Allocation{Key: Key{ContainerID: strings.Repeat("x", 300), IfName: "eth0"}, Addr: netip.MustParseAddr("10.0.0.5")}); err == nil {
		t.Fatal("over-long container ID accepted")
	}
	for _, bad := range []string{"a_10.0.0.1_c", "a_nope_c_eth0", "a_10.0.0.1_c%4_eth0", "a_10.0.0.1_c%ZZ_eth0"} {
		if _, err := parseEntry(bad); err == nil {
			t.Errorf("parseEntry(%q) accepted", bad)
		}
	}
}

// A store survives a process dying between any two of its steps: what is
// on disk always loads, and released entries never come back.
func TestStoreReleaseAndReload(t *testing.T) {
	dir := t.TempDir()
	ranges := []netip.Prefix{mustPrefix("10.6.0.0/28")}
	st := NewStore(dir, "net")
	for i := range 5 {
		if err := st.Update(context.Background(), func(s *State) error { _, _, err := s.Allocate(key(i), ranges); return err }); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Update(context.Background(), func(s *State) error { s.Release(key(2)); return nil }); err != nil {
		t.Fatal(err)
	}
	var got State
	_ = NewStore(dir, "net").View(context.Background(), func(s *State) error { got = *s; return nil })
	if len(got.Allocations) != 4 || len(got.Lookup(key(2))) != 0 || got.Last[ranges[0].String()] != netip.MustParseAddr("10.6.0.6") {
		t.Fatalf("reloaded state: %+v", got)
	}
}
