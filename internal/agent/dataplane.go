package agent

import (
	"errors"
	"sync"
	"time"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// dataplaneStatus is the base dataplane's state (the policy controller's
// table, which also holds anti-spoofing), as node setup (the node state
// file's ready and dataplane marker, the NetworkUnavailable condition) and
// /readyz read it. It learns each policy sync's outcome as the runner's
// Observer (passing it on to the metrics), and triggers node setup when
// the outcome flips: the plugin's gate opens and closes with it.
type dataplaneStatus struct {
	next syncrunner.Observer
	// tables must exist while the base dataplane is in place.
	tables []podlink.NFTable

	mu sync.Mutex
	// none: no policy controller runs (no nftables), nothing to wait for.
	none    bool
	synced  bool
	lastErr error
	changed func()
}

var _ syncrunner.Observer = (*dataplaneStatus)(nil)

// newDataplaneStatus returns the dataplane status; withPolicy is false when
// no policy controller runs at all.
func newDataplaneStatus(withPolicy bool, next syncrunner.Observer) *dataplaneStatus {
	s := &dataplaneStatus{next: next, none: !withPolicy}
	// The policy table holds anti-spoofing whether or not NetworkPolicy
	// is enforced, so it must exist in both cases.
	if withPolicy {
		s.tables = []podlink.NFTable{{Family: "inet", Name: policy.TableName}}
	}
	return s
}

// onChange sets the function called when the outcome flips.
func (s *dataplaneStatus) onChange(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changed = fn
}

// ObserveSync records a policy sync's outcome.
func (s *dataplaneStatus) ObserveSync(name string, took time.Duration, err error) {
	if s.next != nil {
		s.next.ObserveSync(name, took, err)
	}
	s.mu.Lock()
	flipped := !s.synced || (s.lastErr == nil) != (err == nil)
	s.synced, s.lastErr = true, err
	changed := s.changed
	s.mu.Unlock()
	if flipped && changed != nil {
		changed()
	}
}

// DataplaneReady implements nodesetup.DataplaneStatus.
func (s *dataplaneStatus) DataplaneReady() (ready, failed bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.none:
		return true, false, ""
	case s.lastErr != nil:
		return false, true, "policy controller failing: " + s.lastErr.Error()
	case !s.synced:
		return false, false, "policy controller has not synced yet"
	}
	return true, false, ""
}

// DataplaneTables implements nodesetup.DataplaneStatus.
func (s *dataplaneStatus) DataplaneTables() []podlink.NFTable { return s.tables }

// check is the /readyz check.
func (s *dataplaneStatus) check() error {
	if ok, _, why := s.DataplaneReady(); !ok {
		return errors.New(why)
	}
	return nil
}
