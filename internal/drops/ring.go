package drops

import (
	"sync"
	"time"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// Ring keeps the most recent drops, at most Size of them and none older
// than MaxAge, and hands new ones to followers. Its memory is bounded by
// Size whatever the rate of drops.
type Ring struct {
	size   int
	maxAge time.Duration
	now    func() time.Time

	mu    sync.Mutex
	buf   []agentapi.Drop // circular, len(buf) <= size
	start int             // index of the oldest
	subs  map[*subscription]struct{}
}

type subscription struct {
	q  agentapi.DropsQuery
	ch chan agentapi.Drop
	// lost counts drops not delivered because the follower was slow.
	lost int
}

// Default bounds of the agent's ring.
const (
	DefaultSize   = 1000
	DefaultMaxAge = 10 * time.Minute
	// followBuffer is how many drops a follower may lag behind before
	// further ones are skipped for it (a slow reader never blocks the node).
	followBuffer = 256
)

// NewRing returns a ring of size drops kept for at most maxAge (defaults
// for values <= 0); now is the clock (nil: time.Now).
func NewRing(size int, maxAge time.Duration, now func() time.Time) *Ring {
	if size <= 0 {
		size = DefaultSize
	}
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	if now == nil {
		now = time.Now
	}
	return &Ring{size: size, maxAge: maxAge, now: now, subs: map[*subscription]struct{}{}}
}

// Add records d and passes it to the followers it matches.
func (r *Ring) Add(d agentapi.Drop) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < r.size {
		r.buf = append(r.buf, d)
	} else {
		r.buf[r.start] = d
		r.start = (r.start + 1) % r.size
	}
	for s := range r.subs {
		if !s.q.Match(&d) {
			continue
		}
		select {
		case s.ch <- d:
		default:
			s.lost++
		}
	}
}

// Snapshot returns the kept drops q matches, oldest first, leaving out
// those older than MaxAge.
func (r *Ring) Snapshot(q agentapi.DropsQuery) []agentapi.Drop {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapshotLocked(q)
}

func (r *Ring) snapshotLocked(q agentapi.DropsQuery) []agentapi.Drop {
	cutoff := r.now().Add(-r.maxAge)
	var out []agentapi.Drop
	for i := range r.buf {
		d := &r.buf[(r.start+i)%len(r.buf)]
		if d.Time.Before(cutoff) || !q.Match(d) {
			continue
		}
		out = append(out, *d)
	}
	return out
}

// Follow returns the kept drops q matches and a channel of the later ones,
// with no gap or duplicate between them; cancel stops the channel and
// returns how many drops were skipped because the follower lagged.
func (r *Ring) Follow(q agentapi.DropsQuery) (past []agentapi.Drop, next <-chan agentapi.Drop, cancel func() int) {
	s := &subscription{q: q, ch: make(chan agentapi.Drop, followBuffer)}
	r.mu.Lock()
	defer r.mu.Unlock()
	past = r.snapshotLocked(q)
	r.subs[s] = struct{}{}
	return past, s.ch, func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.subs, s)
		return s.lost
	}
}

// Len is the number of drops held (old ones included until overwritten).
func (r *Ring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buf)
}
