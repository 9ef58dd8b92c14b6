package agent

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// dataplaneStatus is the base dataplane's state, as node setup (the node
// state file's ready and dataplane marker, the NetworkUnavailable
// condition) and /readyz read it. The base dataplane is the tables pods
// must not be wired without: the policy controller's (which also holds
// anti-spoofing) and, with encryption's strict mode, the strict table (no
// pod traffic to another node leaves in plaintext). It learns each of
// their syncs' outcomes as their runners' Observer (passing them on to the
// metrics), and triggers node setup when the combined outcome may have
// flipped: the plugin's gate opens and closes with it.
type dataplaneStatus struct {
	next syncrunner.Observer

	mu sync.Mutex
	// parts are the controllers the base dataplane needs, in order; none:
	// nothing to wait for.
	parts   []*dataplanePart
	changed func()
	// marker returns the node state file's dataplane marker when it is
	// from this boot (nil otherwise); nil: not looked at.
	marker func() *podlink.Dataplane
}

// dataplanePart is one controller the base dataplane needs.
type dataplanePart struct {
	runner string // the controller's runner name (ObserveSync's name)
	what   string // for reasons: "policy controller"
	table  podlink.NFTable

	synced  bool
	lastErr error
}

var _ syncrunner.Observer = (*dataplaneStatus)(nil)

// newDataplaneStatus returns the dataplane status; withPolicy is false when
// no policy controller runs at all.
func newDataplaneStatus(withPolicy bool, next syncrunner.Observer) *dataplaneStatus {
	s := &dataplaneStatus{next: next}
	// The policy table holds anti-spoofing whether or not NetworkPolicy
	// is enforced, so it must exist in both cases.
	if withPolicy {
		s.parts = append(s.parts, &dataplanePart{runner: "policy", what: "policy controller",
			table: podlink.NFTable{Family: "inet", Name: policy.TableName}})
	}
	return s
}

// require adds a controller the base dataplane needs: the marker appears
// only once it has synced successfully, and names table. unavailable, when not nil, is why the controller cannot
// run at all (the dataplane then stays failed).
func (s *dataplaneStatus) require(runner, what string, table podlink.NFTable, unavailable error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts = append(s.parts, &dataplanePart{runner: runner, what: what, table: table,
		synced: unavailable != nil, lastErr: unavailable})
}

// onChange sets the function called when the outcome flips.
func (s *dataplaneStatus) onChange(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changed = fn
}

// watchMarker sets the function reading the node state file's marker when
// it is from this boot. Then, before a part's first outcome, a marker that
// does not name its table (written before the part was required, e.g.
// strict mode just turned on) is withdrawn rather than kept: see
// DataplaneReady.
func (s *dataplaneStatus) watchMarker(fn func() *podlink.Dataplane) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marker = fn
}

// ObserveSync records a sync's outcome (of the part whose runner is name;
// other runners are only passed on).
func (s *dataplaneStatus) ObserveSync(name string, took time.Duration, err error) {
	if s.next != nil {
		s.next.ObserveSync(name, took, err)
	}
	s.mu.Lock()
	flipped := false
	for _, p := range s.parts {
		if p.runner != name {
			continue
		}
		flipped = !p.synced || (p.lastErr == nil) != (err == nil)
		p.synced, p.lastErr = true, err
	}
	changed := s.changed
	s.mu.Unlock()
	if flipped && changed != nil {
		changed()
	}
}

// DataplaneReady implements nodesetup.DataplaneStatus. Not ready and not
// failed lets node setup keep a marker of this boot (a restarted agent
// whose previous run's tables are still in force); a required part whose
// table that marker does not name has never been in place, so before its
// first outcome it reads as failed, which withdraws the marker.
func (s *dataplaneStatus) DataplaneReady() (ready, failed bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.parts {
		if p.lastErr != nil {
			return false, true, p.what + " failing: " + p.lastErr.Error()
		}
	}
	for _, p := range s.parts {
		if p.synced {
			continue
		}
		if s.marker != nil {
			if m := s.marker(); m != nil && !slices.Contains(m.Tables, p.table) {
				return false, true, p.what + " has not synced yet and the dataplane marker does not name table " + p.table.String()
			}
		}
		return false, false, p.what + " has not synced yet"
	}
	return true, false, ""
}

// DataplaneTables implements nodesetup.DataplaneStatus.
func (s *dataplaneStatus) DataplaneTables() []podlink.NFTable {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []podlink.NFTable
	for _, p := range s.parts {
		out = append(out, p.table)
	}
	return out
}

// check is the /readyz check.
func (s *dataplaneStatus) check() error {
	if ok, _, why := s.DataplaneReady(); !ok {
		return errors.New(why)
	}
	return nil
}
