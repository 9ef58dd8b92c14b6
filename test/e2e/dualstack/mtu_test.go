//go:build e2e && dualstack

package dualstack

import (
	"fmt"
	"testing"

	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// Per family: UDP datagrams that fill the pod MTU exactly, sent with
// fragmentation forbidden (IPv4's DF bit, IPv6's IPV6_PMTUDISC_DO: no
// fragmentation at the sender; routers never fragment IPv6), pass between
// pods on every path the mode connects, in both directions; one byte more
// is refused at the sender (EMSGSIZE). Over IPv6 the headers take 48 bytes
// (40 + 8), over IPv4 28 (framework.FullSizeUDP).
func TestE2EDualStackLargeUDPNoFragmentation(t *testing.T) {
	requireAgent(t)
	pods := lab.PodPerNode(t, "ds-mtu", lab.Nodes())
	eachFamily(t, func(t *testing.T, f topology.ClusterFamily) {
		for i, a := range pods {
			for j, b := range pods {
				if i >= j || !reachable(lab.NodeOf(t, a), lab.NodeOf(t, b)) {
					continue
				}
				framework.FullSizeUDP(t, fmt.Sprintf("%s (%s) <-> %s (%s) over %s", a, lab.NodeOf(t, a), b, lab.NodeOf(t, b), f.Name()),
					lab.PodNetns(t, a), lab.PodAddr(t, a, f), lab.PodNetns(t, b), lab.PodAddr(t, b, f))
			}
		}
	})
}
