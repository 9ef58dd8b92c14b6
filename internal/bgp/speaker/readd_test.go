package speaker

import (
	"testing"

	api "github.com/osrg/gobgp/v4/api"
)

// A changed password, timers or route-reflector role re-add the
// neighbour (a new session); other changes update it in place.
func TestNeedsReAdd(t *testing.T) {
	peer := func(pw string, hold uint64, rr bool) *api.Peer {
		return &api.Peer{
			Conf:           &api.PeerConf{NeighborAddress: "172.30.1.254", PeerAsn: 65000, AuthPassword: pw},
			Timers:         &api.Timers{Config: &api.TimersConfig{HoldTime: hold}},
			RouteReflector: &api.RouteReflector{RouteReflectorClient: rr},
		}
	}
	base := peer("a", 90, false)
	for _, c := range []struct {
		name string
		cur  *api.Peer
		want bool
	}{
		{"same", peer("a", 90, false), false},
		{"password", peer("b", 90, false), true},
		{"password removed", peer("", 90, false), true},
		{"timers", peer("a", 9, false), true},
		{"reflector role", peer("a", 90, true), true},
	} {
		if got := needsReAdd(base, c.cur); got != c.want {
			t.Errorf("%s: needsReAdd = %v, want %v", c.name, got, c.want)
		}
	}
}
