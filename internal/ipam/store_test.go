package ipam

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
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
	if _, err := os.Stat(filepath.Join(dir, "net", stateFile)); !os.IsNotExist(err) {
		t.Fatalf("state written despite error: %v", err)
	}
}

func TestStoreRefusesCorruptState(t *testing.T) {
	dir := t.TempDir()
	st := NewStore(dir, "net")
	if err := os.MkdirAll(st.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.Dir(), stateFile), []byte(`{"version":1,"allocations":[`), 0o600); err != nil {
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
