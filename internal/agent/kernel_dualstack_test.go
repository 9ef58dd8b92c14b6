//go:build kernel

package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

// countingForwarder is node setup's IPv6Forwarder, counting its calls.
type countingForwarder struct {
	mu    sync.Mutex
	calls int
}

func (c *countingForwarder) EnableIPv6Forwarding() ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return nil, nil
}

func (c *countingForwarder) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func dualNode(name, ip4, ip6, cidr4, cidr6 string) *v1.Node {
	n := node(name, ip4, cidr4)
	n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip6})
	n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, cidr6)
	return n
}

// The agent's node side on a dual-stack node, in a real namespace: node
// setup turns IPv6 forwarding on and writes both pod CIDRs to the node
// state file; the IPv6 masquerade table's exempt set holds every Node's
// IPv6 pod CIDR (and the IPv4 table the IPv4 ones), and its sources this
// node's.
func TestKernelAgentDualStackNodeSide(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	dp := &netlinkprog.Programmer{Handle: n.Handle, NetnsPath: n.NS.Path()}
	dir := t.TempDir()
	cfg := &config.Config{NodeName: "node1", RoutingMode: config.ModeNative, CNIPluginSource: "/proc/self/exe",
		CNIBinDir: dir + "/bin", CNIConfDir: dir + "/net.d", NodeStateFile: dir + "/node-state.json",
		MetricsBindAddress: "127.0.0.1:0"}
	cfg.ApplyDefaults()
	cfg.MinSyncInterval.Duration = 50 * time.Millisecond
	client := fake.NewClientset(
		dualNode("node1", "10.0.1.11", "fd00:1::11", "10.244.1.0/24", "fd00:10:244:1::/64"),
		dualNode("node2", "10.0.1.12", "fd00:1::12", "10.244.2.0/24", "fd00:10:244:2::/64"),
		node("node3", "10.0.1.13", "10.244.3.0/24"),
	)
	nft := knftables.NewFake(knftables.IPv4Family, masq.TableName)
	nft6 := knftables.NewFake(knftables.IPv6Family, masq.TableName)
	fw := &countingForwarder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, deps{api: fakeAPI(t, client), routes: dp, sysctls: memSysctls{}, forwarding6: fw, nft: nft, nft6: nft6})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent returned %v", err)
		}
	}()
	want := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}
	eventually(t, 5*time.Second, "node state file with both pod CIDRs, IPv6 forwarding on", func() bool {
		st, err := podlink.ReadNodeState(cfg.NodeStateFile)
		return err == nil && slices.Equal(st.PodCIDRs, want) && fw.n() > 0
	})
	elements := func(nft knftables.Interface, set string) []string {
		els, err := nft.ListElements(ctx, "set", set)
		if err != nil {
			return nil
		}
		var out []string
		for _, e := range els {
			out = append(out, strings.Join(e.Key, " . "))
		}
		slices.Sort(out)
		return out
	}
	var got6, src6, got4 []string
	if !pollUntil(5*time.Second, func() bool {
		got6, src6, got4 = elements(nft6, masq.SetNoMasqDst), elements(nft6, masq.SetPodSources), elements(nft, masq.SetNoMasqDst)
		return slices.Equal(got6, []string{"fd00:10:244:1::/64", "fd00:10:244:2::/64"}) && slices.Equal(src6, []string{"fd00:10:244:1::/64"}) &&
			len(got4) == 3
	}) {
		t.Fatalf("masquerade sets: IPv6 exempt %v, IPv6 sources %v, IPv4 exempt %v; want both IPv6 pod CIDRs, the own, the 3 IPv4 ones", got6, src6, got4)
	}
	for _, e := range got4 {
		if strings.Contains(e, ":") {
			t.Errorf("IPv6 prefix %s in the IPv4 exempt set", e)
		}
	}
}
