package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// DefaultDataDir is where allocations are kept when the config names none.
const DefaultDataDir = "/var/lib/trellis/ipam"

const (
	lockFile   = "lock"
	cursorFile = "cursor.json"
	// entryPrefix starts the name of every allocation entry:
	// a_<address>_<containerID>_<ifname>, parts escaped (see escapePart).
	entryPrefix = "a_"
	maxNameLen  = 255
)

// ErrLockTimeout is returned (wrapped) when another process holds the store
// lock for longer than the store's lock timeout.
var ErrLockTimeout = errors.New("timed out waiting for the IPAM lock")

// Store persists a State in one directory (one per CNI network).
//
// Every allocation is an empty file whose name carries the address and the
// attachment key. Creating or removing one directory entry is atomic, so a
// crash or kill -9 at any point leaves each allocation either recorded or
// not, never half-written, and there is no shared file to corrupt. Every
// mutation runs under an exclusive flock (concurrent plugin processes are
// serialized); the directory is fsynced after the lock is released and
// before Update returns, so an allocation is durable before ADD returns
// while concurrent callers' fsyncs overlap instead of queueing.
//
// The round-robin cursor (State.Last) is replaced with write-then-rename
// under the lock but not fsynced: losing it to a power cut only changes the
// order in which free addresses are reused.
type Store struct {
	dir         string
	LockTimeout time.Duration
}

// NewStore returns the store for network name under dataDir.
func NewStore(dataDir, network string) *Store {
	return &Store{dir: filepath.Join(dataDir, network), LockTimeout: 30 * time.Second}
}

// Dir is the directory holding the store's files.
func (s *Store) Dir() string { return s.dir }

// Update runs fn on the current state under the exclusive lock and persists
// what fn changed. When fn returns an error nothing is written.
func (s *Store) Update(ctx context.Context, fn func(*State) error) error {
	changed, err := s.update(ctx, fn)
	if err != nil || !changed {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

func (s *Store) update(ctx context.Context, fn func(*State) error) (bool, error) {
	unlock, err := s.lock(ctx, true)
	if err != nil {
		return false, err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return false, err
	}
	before := State{Allocations: slices.Clone(st.Allocations), Last: maps.Clone(st.Last)}
	if err := fn(st); err != nil {
		return false, err
	}
	return s.save(&before, st)
}

// View runs fn on the current state under a shared lock.
func (s *Store) View(ctx context.Context, fn func(*State) error) error {
	unlock, err := s.lock(ctx, false)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	return fn(st)
}

func (s *Store) lock(ctx context.Context, exclusive bool) (func(), error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create IPAM directory %s: %w", s.dir, err)
	}
	fl := flock.New(filepath.Join(s.dir, lockFile))
	acquire := fl.Lock
	if !exclusive {
		acquire = fl.RLock
	}
	// A blocking flock queues in the kernel, which is fair under heavy
	// contention (polling with TryLock starves waiters). The wait is bounded
	// by running it aside: on timeout the waiter gives up, and should the
	// lock arrive later it is released at once.
	done := make(chan error, 1)
	go func() { done <- acquire() }()
	timer := time.NewTimer(s.LockTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", fl.Path(), err)
		}
		return func() { _ = fl.Unlock() }, nil
	case <-ctx.Done():
	case <-timer.C:
	}
	go func() {
		if err := <-done; err == nil {
			_ = fl.Unlock()
		}
	}()
	return nil, fmt.Errorf("%w %s after %s", ErrLockTimeout, fl.Path(), s.LockTimeout)
}

func (s *Store) load() (*State, error) {
	d, err := os.Open(s.dir)
	if err != nil {
		return nil, fmt.Errorf("open IPAM directory: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("list IPAM directory %s: %w", s.dir, err)
	}
	st := &State{}
	for _, n := range names {
		if !strings.HasPrefix(n, entryPrefix) {
			continue
		}
		a, err := parseEntry(n)
		if err != nil {
			// Never skip an entry we cannot read: that could hand out an address in use.
			return nil, fmt.Errorf("IPAM entry %s in %s is unreadable (refusing to allocate): %w", n, s.dir, err)
		}
		st.Allocations = append(st.Allocations, a)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, cursorFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read IPAM cursor: %w", err)
	default:
		// The cursor only orders reuse: an unreadable one is replaced.
		_ = json.Unmarshal(data, &st.Last)
	}
	return st, nil
}

// save writes the difference between before and after. It reports whether
// any allocation entry changed (the caller then fsyncs the directory).
func (s *Store) save(before, after *State) (bool, error) {
	old := map[Allocation]bool{}
	for _, a := range before.Allocations {
		old[a] = true
	}
	changed := false
	for _, a := range after.Allocations {
		if old[a] {
			delete(old, a)
			continue
		}
		name, err := entryName(a)
		if err != nil {
			return changed, err
		}
		f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return changed, fmt.Errorf("record allocation %s: %w", a.Addr, err)
		}
		f.Close()
		changed = true
	}
	for a := range old { // released
		name, err := entryName(a)
		if err != nil {
			return changed, err
		}
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return changed, fmt.Errorf("release %s: %w", a.Addr, err)
		}
		changed = true
	}
	if !maps.Equal(before.Last, after.Last) {
		data, err := json.Marshal(after.Last)
		if err != nil {
			return changed, fmt.Errorf("encode IPAM cursor: %w", err)
		}
		tmp := filepath.Join(s.dir, cursorFile+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return changed, fmt.Errorf("write IPAM cursor: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(s.dir, cursorFile)); err != nil {
			return changed, fmt.Errorf("replace IPAM cursor: %w", err)
		}
	}
	return changed, nil
}

func entryName(a Allocation) (string, error) {
	name := entryPrefix + a.Addr.String() + "_" + escapePart(a.ContainerID) + "_" + escapePart(a.IfName)
	if len(name) > maxNameLen {
		return "", fmt.Errorf("container ID %q is too long to record (allocation entry over %d bytes)", a.ContainerID, maxNameLen)
	}
	return name, nil
}

func parseEntry(name string) (Allocation, error) {
	parts := strings.Split(strings.TrimPrefix(name, entryPrefix), "_")
	if len(parts) != 3 {
		return Allocation{}, errors.New("want address_containerID_ifname")
	}
	addr, err := netip.ParseAddr(parts[0])
	if err != nil {
		return Allocation{}, err
	}
	cid, err1 := unescapePart(parts[1])
	ifn, err2 := unescapePart(parts[2])
	if err := errors.Join(err1, err2); err != nil {
		return Allocation{}, err
	}
	return Allocation{Key: Key{ContainerID: cid, IfName: ifn}, Addr: addr}, nil
}

// escapePart keeps [A-Za-z0-9.-] and writes every other byte as %XX, so the
// separator "_" and "/" never appear inside a part.
func escapePart(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func unescapePart(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		var c byte
		if _, err := fmt.Sscanf(s[i+1:i+3], "%02X", &c); err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String(), nil
}
