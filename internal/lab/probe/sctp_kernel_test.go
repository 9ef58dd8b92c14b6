//go:build kernel

package probe

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// TestKernelSCTPProbe sends the crafted INIT between two namespaces joined by
// a veth, over IPv4 and IPv6: it must arrive, and must not once nftables
// drops SCTP on the way.
func TestKernelSCTPProbe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestKernelSCTPProbe needs root (network namespaces)")
	}
	ctx := context.Background()
	a, b := fmt.Sprintf("tlsa%d", os.Getpid()%100000), fmt.Sprintf("tlsb%d", os.Getpid()%100000)
	t.Cleanup(func() { _ = topology.DeleteNetns(context.Background(), []string{a, b}) })
	for _, step := range [][]string{
		{"ip", "netns", "add", a}, {"ip", "netns", "add", b},
		{"ip", "link", "add", "name", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", b},
		{"ip", "-n", a, "addr", "add", "192.168.77.1/24", "dev", "eth0"},
		{"ip", "-n", b, "addr", "add", "192.168.77.2/24", "dev", "eth0"},
		{"ip", "-n", a, "addr", "add", "fd00:77::1/64", "dev", "eth0", "nodad"},
		{"ip", "-n", b, "addr", "add", "fd00:77::2/64", "dev", "eth0", "nodad"},
		{"ip", "-n", a, "link", "set", "eth0", "up"}, {"ip", "-n", b, "link", "set", "eth0", "up"},
	} {
		if err := proc.Run(ctx, step[0], step[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	dsts := []netip.Addr{netip.MustParseAddr("192.168.77.2"), netip.MustParseAddr("fd00:77::2")}
	// The link first: right after `link set up` a veth pair can take more
	// than the probe's 2 s to pass IPv6 (neighbour solicitations sent while
	// the peer came up are lost and retried a second later); a ping that
	// gets through shows the path is up before the probe is judged.
	for _, dst := range dsts {
		deadline := time.Now().Add(10 * time.Second)
		for topology.InNetns(ctx, a, "ping", "-c1", "-W1", dst.String()) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s does not answer ping from %s after 10 s", dst, a)
			}
		}
	}
	for _, dst := range dsts {
		ok, err := ProbeSCTP("/run/netns/"+a, "/run/netns/"+b, dst, 80, 2*time.Second)
		if err != nil || !ok {
			for _, n := range []string{a, b} {
				out, _ := exec.Command("sh", "-c", "ip -n "+n+" -d addr; ip -n "+n+" -6 route; ip -n "+n+" -6 neigh; ip netns exec "+n+" sysctl net.ipv6.conf.eth0.disable_ipv6 net.ipv6.conf.all.disable_ipv6").CombinedOutput()
				t.Logf("%s:\n%s", n, out)
			}
			t.Fatalf("INIT to %s did not arrive: ok=%v err=%v", dst, ok, err)
		}
	}
	if err := topology.InNetns(ctx, a, "nft", "add table inet t; add chain inet t out { type filter hook output priority 0; meta l4proto sctp drop; }"); err != nil {
		t.Fatal(err)
	}
	for _, dst := range dsts {
		ok, err := ProbeSCTP("/run/netns/"+a, "/run/netns/"+b, dst, 80, time.Second)
		if err != nil || ok {
			t.Fatalf("INIT to %s arrived through a drop rule: ok=%v err=%v", dst, ok, err)
		}
	}
}
