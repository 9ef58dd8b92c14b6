//go:build kernel

package masq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// An IPv6 pod wired by trellis-cni in node namespace a: its traffic to an
// address outside the cluster leaves a masqueraded to a's address, as the
// peer b sees it; its traffic to another node's pod keeps the pod's
// address. Without the table (control) the outside peer sees the pod.
func TestKernelMasqueradeIPv6Pod(t *testing.T) {
	a, b := netnstest.NewLinkedNodes(t, "fd00:1::11/64", "fd00:1::12/64")
	waitNotTentative(t, a, "ul0")
	waitNotTentative(t, b, "ul0")
	b.Configure(t, "lo", "fd00:10:244:2::5/128")
	route(t, a, "fd00:10:244:2::/64", "fd00:1::12")
	route(t, b, "fd00:10:244:1::/64", "fd00:1::11")

	podNS, podAddr := wirePod(t, a, "fd00:10:244:1::/120")
	outside := listen6(t, b.NS, "[fd00:1::12]:7200")
	remotePod := listen6(t, b.NS, "[fd00:10:244:2::5]:7300")
	pod := listen6(t, podNS, "[::]:7100")

	// Its own source port: the flow of the checks below starts under the table.
	control := listen6(t, podNS, "[::]:7101")
	if got := sourceSeen(t, control, outside); got != podAddr.String() {
		t.Fatalf("control, no masquerade table: outside saw %s, want the pod %s", got, podAddr)
	}

	d := ComputeFamily(knftables.IPv6Family, pfx("fd00:10:244:1::/64"), pfx("fd00:10:244::/56"), pfx("fd00:10:244:1::/64", "fd00:10:244:2::/64"), nil)
	err := a.NS.Do(func(ns.NetNS) error {
		nft, err := NewNFTFamily(knftables.IPv6Family)
		if err != nil {
			return err
		}
		// Twice: the second run must be a no-op, not a failure.
		if err := Apply(context.Background(), nft, d); err != nil {
			return err
		}
		return Apply(context.Background(), nft, d)
	})
	if err != nil {
		t.Fatalf("program the IPv6 table in the node namespace: %v", err)
	}
	if got := sourceSeen(t, pod, outside); got != "fd00:1::11" {
		t.Errorf("IPv6 pod -> outside the cluster seen from %s, want the node address fd00:1::11", got)
	}
	if got := sourceSeen(t, pod, remotePod); got != podAddr.String() {
		t.Errorf("IPv6 pod -> another node's pod seen from %s, want the pod address %s (no masquerade inside the cluster)", got, podAddr)
	}
	out, err := a.Exec("nft", "list", "table", "ip6", TableName)
	if err != nil || !strings.Contains(out, "ip6 saddr @pod-sources") {
		t.Fatalf("nft list table ip6 %s: %v\n%s", TableName, err, out)
	}
	if _, err := a.Exec("nft", "list", "table", "ip", TableName); err == nil {
		t.Error("programming IPv6 masquerade created the IPv4 table")
	}
	t.Logf("IPv6 table after two syncs:\n%s", out)
}

// wirePod builds trellis-cni and wires one pod into node n from subnet
// through libcni; it returns the pod's namespace and address. DEL and the
// namespace's removal run at cleanup.
func wirePod(t *testing.T, n *netnstest.Node, subnet string) (ns.NetNS, netip.Addr) {
	t.Helper()
	bin := t.TempDir()
	if _, err := cnirunner.BuildPlugin(bin); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	conflist, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "masq-test", "plugins": []any{map[string]any{
		"type": "trellis-cni", "mtu": 1400, "ipam": map[string]any{"subnets": []string{subnet}, "dataDir": filepath.Join(state, "ipam")},
		"nodeStateFile": filepath.Join(state, "node-state.json"), "logFile": filepath.Join(state, "cni.log"),
	}}})
	r, err := cnirunner.New(conflist, []string{bin}, t.TempDir(), n.NS)
	if err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, 4)
	_, _ = rand.Read(rnd)
	name := "trl-mpod-" + hex.EncodeToString(rnd)
	podNS, err := cnirunner.NewNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Del(context.Background(), "ctr-"+name, podNS.Path(), "eth0")
		podNS.Close()
		_ = cnirunner.DeleteNetNS(name)
	})
	res, err := r.Add(context.Background(), "ctr-"+name, podNS.Path(), "eth0")
	if err != nil {
		logs, _ := os.ReadFile(filepath.Join(state, "cni.log"))
		t.Fatalf("ADD: %v\n%s", err, logs)
	}
	var out struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	data, _ := json.Marshal(res)
	if err := json.Unmarshal(data, &out); err != nil || len(out.IPs) != 1 {
		t.Fatalf("ADD result %s: %v", data, err)
	}
	p, err := netip.ParsePrefix(out.IPs[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	return podNS, p.Addr()
}

func listen6(t *testing.T, n ns.NetNS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	}); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitNotTentative waits (up to 5 s) until link's IPv6 addresses in n have
// passed duplicate address detection: a tentative address is no source,
// masquerade's included.
func waitNotTentative(t *testing.T, n *netnstest.Node, link string) {
	t.Helper()
	l, err := n.Handle.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		addrs, err := n.Handle.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		tentative := false
		for _, a := range addrs {
			tentative = tentative || a.Flags&unix.IFA_F_TENTATIVE != 0
		}
		if !tentative {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still has tentative addresses: %v", link, addrs)
		}
	}
}

// A dual-stack node's two tables are guarded alike: after nft flush
// ruleset both are back within 1 s (one foreign change counted per table),
// after deleting only the IPv6 table only it is rewritten.
func TestKernelMasqueradeDualStackTablesRepaired(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	var w4, w6 *nftwatch.Watch
	var nft4, nft6 knftables.Interface
	if err := n.NS.Do(func(ns.NetNS) error {
		var err error
		if w4, err = nftwatch.Open(unix.NFPROTO_IPV4, TableName); err != nil {
			return err
		}
		if w6, err = nftwatch.Open(unix.NFPROTO_IPV6, TableName); err != nil {
			return err
		}
		if nft4, err = NewNFT(); err != nil {
			return err
		}
		nft6, err = NewNFTFamily(knftables.IPv6Family)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w4.Close)
	t.Cleanup(w6.Close)
	c, err := New(Config{NodeName: "n1", NFT: nft4, Watch: w4, NFT6: nft6, Watch6: w6,
		Nodes: nodesWith(t, map[string][]string{"n1": {"10.244.1.0/24", "fd00:10:244:1::/64"}, "n2": {"10.244.2.0/24", "fd00:10:244:2::/64"}}),
		Sync:  syncrunner.Options{MinInterval: 100 * time.Millisecond, MaxInterval: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	list := func(family string) string {
		out, err := n.Exec("nft", "list", "table", family, TableName)
		if err != nil {
			return "(no table)"
		}
		return counterValues.ReplaceAllString(out, "packets _ bytes _")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer netnstest.RunGuarded(ctx, t, n.NS, c.Run, c.Watch)()
	defer cancel()
	waitBoth := func(limit time.Duration) (string, string, bool) {
		for start := time.Now(); time.Since(start) < limit; time.Sleep(5 * time.Millisecond) {
			v4, v6 := list("ip"), list("ip6")
			if strings.Contains(v4, "10.244.1.0/24") && strings.Contains(v6, "fd00:10:244:1::/64") {
				return v4, v6, true
			}
		}
		return list("ip"), list("ip6"), false
	}
	want4, want6, ok := waitBoth(5 * time.Second)
	if !ok {
		t.Fatalf("first sync: tables\n%s\n%s", want4, want6)
	}
	foreign := func() float64 { return testutil.ToFloat64(c.guard.Changes.WithLabelValues(nftwatch.ReasonForeign)) }
	const flushes = 3
	for i := range flushes {
		time.Sleep(150 * time.Millisecond)
		if out, err := n.Exec("nft", "flush", "ruleset"); err != nil {
			t.Fatalf("nft flush ruleset: %v %s", err, out)
		}
		if v4, v6, ok := waitBoth(time.Second); !ok || v4 != want4 || v6 != want6 {
			t.Fatalf("flush %d: tables not back within 1 s:\n%s\n%s", i, v4, v6)
		}
	}
	// Both tables come back at once; the count follows within the sync.
	for deadline := time.Now().Add(time.Second); foreign() != 2*flushes && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := foreign(); got != 2*flushes {
		t.Errorf("foreign changes = %v after %d flushes of two tables, want %d", got, flushes, 2*flushes)
	}
	before4 := handlesOf(t, n, "ip")
	time.Sleep(150 * time.Millisecond)
	if out, err := n.Exec("nft", "delete", "table", "ip6", TableName); err != nil {
		t.Fatalf("nft delete table ip6: %v %s", err, out)
	}
	if v4, v6, ok := waitBoth(time.Second); !ok || v6 != want6 {
		t.Fatalf("IPv6 table not back within 1 s:\n%s\n%s", v4, v6)
	}
	if after := handlesOf(t, n, "ip"); after != before4 {
		t.Errorf("deleting the IPv6 table rewrote the IPv4 one:\n%s\nwas\n%s", after, before4)
	}
}

func handlesOf(t *testing.T, n *netnstest.Node, family string) string {
	t.Helper()
	out, err := n.Exec("nft", "-a", "list", "table", family, TableName)
	if err != nil {
		t.Fatalf("nft -a list %s: %v %s", family, err, out)
	}
	return counterValues.ReplaceAllString(out, "packets _ bytes _")
}
