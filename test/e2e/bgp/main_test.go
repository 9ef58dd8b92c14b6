//go:build e2e

// Package bgp holds the end-to-end tests of Trellis's BGP route
// distribution on one lab brought up with `trellis-lab up --routing-mode bgp`
// (3 nodes over 2 subnets, AS 64512; the ToR is BIRD 2 in the lab's router
// namespace, AS 65000, the only source of cross-subnet pod routes): pod
// CIDRs through the ToR, the external host reaching pods and Service
// addresses without masquerade, the ToR's prefix in every node's kernel
// (protocol 159), graceful restart on kill -9 and on an agent kept down,
// BFD against the hold time on a cut link, a wrong TCP-MD5 password, and a
// live switch of the internal peering. Figures are logged on lines
// starting `FIGURE`.
package bgp

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

// labRestartTime is the graceful-restart time the suite's lab announces
// (--bgp-restart-time): short, so that waiting it out keeps the suite lean.
const labRestartTime = 20

func TestMain(m *testing.M) {
	// The suite brings its own lab up in routing mode bgp (which implies
	// the ToR); a reused lab (TRELLIS_LAB_REUSE=1) must have been brought
	// up so (checked by requireBGPLab).
	if os.Getenv("TRELLIS_LAB_ROUTING") == "" {
		_ = os.Setenv("TRELLIS_LAB_ROUTING", topology.RoutingModeBGP)
	}
	if os.Getenv("TRELLIS_LAB_BGP_RESTART_TIME") == "" {
		_ = os.Setenv("TRELLIS_LAB_BGP_RESTART_TIME", strconv.Itoa(labRestartTime))
	}
	framework.Main(m, &l, 10*time.Minute)
}
