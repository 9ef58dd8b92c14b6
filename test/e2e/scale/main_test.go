//go:build e2e

package scale

import (
	"testing"
	"time"

	"github.com/trellisnet/trellis/test/e2e/framework"
)

var l *framework.Lab

// The lab must be brought up with the wide cluster CIDR (ClusterCIDR,
// NodeCIDRMask): `make bench-scale` sets TRELLIS_LAB_CLUSTER_CIDR and
// TRELLIS_LAB_NODE_CIDR_MASK.
func TestMain(m *testing.M) { framework.Main(m, &l, 15*time.Minute) }
