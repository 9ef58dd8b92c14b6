//go:build e2e

package policy

import (
	"flag"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/trellisnet/trellis/test/e2e/netpolworld"
)

var (
	randSeed  = flag.Int64("policy.seed", 0, "seed of TestE2EPolicyRandom (0: from the clock, printed)")
	randCases = flag.Int("policy.cases", 4, "number of random policy sets TestE2EPolicyRandom applies")
)

// TestE2EPolicyRandom is the property test run against the lab: random
// policy sets applied through the API, the whole matrix probed, observed
// equal to the oracle's expectation, over every IP family of the lab (with
// ipBlocks of each). The seed is printed for a rerun.
func TestE2EPolicyRandom(t *testing.T) {
	requireAgent(t)
	seed := *randSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000
	}
	t.Logf("seed %d (rerun: -policy.seed=%d -policy.cases=%d)", seed, seed, *randCases)
	m := newModel(t)
	g := netpolworld.Gen{R: rand.New(rand.NewSource(seed)), Pods: m.pods, IP: m.ip}
	if len(m.fams) > 1 || m.fams[0].IPv6 {
		// ipBlocks of every family of the lab (an IPv4 lab keeps the
		// original vocabulary, so that its seeds replay).
		for _, f := range m.fams {
			g.Blocks = append(g.Blocks, netpolworld.Block{CIDR: f.ClusterCIDR, IP: m.addr[f.Name()], Wide: f.NodeMaskSize})
		}
	}
	for c := 0; c < *randCases; c++ {
		t.Run(fmt.Sprintf("case-%d", c), func(t *testing.T) {
			t.Cleanup(func() { m.removeAll(t) })
			for i, n := 0, 1+g.R.Intn(3); i < n; i++ {
				m.create(t, g.Pick("x", "y", "z"), fmt.Sprintf("rnd-%d", i), g.Spec())
			}
			m.expect(t, converge)
		})
	}
}
