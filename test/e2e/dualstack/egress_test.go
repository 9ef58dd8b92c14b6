//go:build e2e && dualstack

package dualstack

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// Per family: every pod reaches the lab's external host (outside the
// cluster, behind the router), which sees the connection come from the
// pod's node address of that family: masquerade is on for both families by
// default.
func TestE2EDualStackMasqueradeToExternal(t *testing.T) {
	tp := requireAgent(t)
	pods := lab.PodPerNode(t, "ds-masq", lab.Nodes())
	ext := tp.External
	eachFamily(t, func(t *testing.T, f topology.ClusterFamily) {
		dst := netip.AddrPortFrom(framework.HostAddr(ext, f), nodePort)
		peers := listen(t, framework.NetnsPath(ext.Netns), dst)
		for _, p := range pods {
			node := lab.NodeOf(t, p)
			want := framework.HostAddr(lab.NodeHost(t, node), f)
			var c net.Conn
			var err error
			framework.InNetns(t, lab.PodNetns(t, p), func() error {
				c, err = net.DialTimeout("tcp", dst.String(), 3*time.Second)
				return nil
			})
			if err != nil {
				t.Errorf("pod %s (on %s) -> external [%s]: %v", p, node, dst, err)
				continue
			}
			c.Close()
			select {
			case src := <-peers:
				if src != want {
					t.Errorf("pod %s (on %s) -> external over %s: source %s, want the node's address %s", p, node, f.Name(), src, want)
				} else {
					t.Logf("pod %s (on %s) -> external [%s]: source %s (the node's)", p, node, dst, src)
				}
			case <-time.After(3 * time.Second):
				t.Errorf("pod %s -> external: connected, but the external host accepted nothing", p)
			}
		}
	})
}
