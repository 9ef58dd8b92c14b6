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
	"time"

	"github.com/gofrs/flock"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// DefaultDataDir is where allocations are kept when the config names none.
const DefaultDataDir = "/var/lib/trellis/ipam"

const (
	stateFile = "allocations.json"
	lockFile  = "lock"
	// stateVersion is the on-disk schema version.
	stateVersion = 1
)

// ErrLockTimeout is returned (wrapped) when another process holds the store
// lock for longer than the store's lock timeout.
var ErrLockTimeout = errors.New("timed out waiting for the IPAM lock")

// Store persists a State in one directory (one per CNI network). Every
// mutation runs under an exclusive file lock, so concurrent plugin processes
// are serialized, and is written with write-then-rename + fsync, so a crash
// or kill -9 at any point leaves either the previous or the new state, and an
// allocation is durable before Update returns.
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

type onDisk struct {
	Version int `json:"version"`
	State
}

// Update runs fn on the current state under the exclusive lock and persists
// the result when fn changed it. When fn returns an error nothing is written.
func (s *Store) Update(ctx context.Context, fn func(*State) error) error {
	unlock, err := s.lock(ctx, true)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	before := cloneState(st)
	if err := fn(st); err != nil {
		return err
	}
	if equalState(&before, st) {
		return nil
	}
	return s.save(st)
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
	path := filepath.Join(s.dir, stateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read IPAM state: %w", err)
	}
	var d onDisk
	if err := json.Unmarshal(data, &d); err != nil {
		// Never start from empty here: that would hand out addresses in use.
		return nil, fmt.Errorf("IPAM state %s is unreadable (refusing to allocate): %w", path, err)
	}
	if d.Version != stateVersion {
		return nil, fmt.Errorf("IPAM state %s has version %d, this build reads version %d", path, d.Version, stateVersion)
	}
	return &d.State, nil
}

func (s *Store) save(st *State) error {
	data, err := json.Marshal(onDisk{Version: stateVersion, State: *st})
	if err != nil {
		return fmt.Errorf("encode IPAM state: %w", err)
	}
	atomicfile.CleanTemp(s.dir, stateFile)
	return atomicfile.Write(filepath.Join(s.dir, stateFile), data, 0o600)
}

func cloneState(s *State) State {
	c := State{Allocations: append([]Allocation(nil), s.Allocations...)}
	if s.Last != nil {
		c.Last = make(map[string]netip.Addr, len(s.Last))
		for k, v := range s.Last {
			c.Last[k] = v
		}
	}
	return c
}

func equalState(a, b *State) bool {
	return slices.Equal(a.Allocations, b.Allocations) && maps.Equal(a.Last, b.Last)
}
