//go:build kernel

package netlinkprog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/routing"
)

// twoNodes wires two node namespaces on one L2 segment through the agent's
// dataplane in the given mode. Each has a "pod" address on lo.
func twoNodes(t *testing.T, mode config.RoutingMode) (a, b *netnstest.Node, podMTU int) {
	t.Helper()
	a, b = netnstest.NewLinkedNodes(t, "10.0.1.11/24", "10.0.1.12/24")
	a.Configure(t, "lo", "10.244.1.5/32")
	b.Configure(t, "lo", "10.244.2.5/32")
	nodes := []routing.Peer{
		{Name: "a", NodeIP: netip.MustParseAddr("10.0.1.11"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
		{Name: "b", NodeIP: netip.MustParseAddr("10.0.1.12"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
	}
	params := routing.Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 99, Port: 4789}}
	for i, n := range []*netnstest.Node{a, b} {
		dp := &Programmer{Handle: n.Handle, NetnsPath: n.NS.Path()}
		ul, err := dp.Underlay(nodes[i].NodeIP)
		if err != nil {
			t.Fatal(err)
		}
		local := routing.LocalNode{Name: nodes[i].Name, NodeIP: nodes[i].NodeIP, Underlay: ul, PodCIDRs: nodes[i].PodCIDRs}
		if err := dp.Apply(context.Background(), routing.Compute(local, nodes, params)); err != nil {
			t.Fatalf("Apply on %s: %v", nodes[i].Name, err)
		}
		podMTU = routing.PodMTU(params, ul.MTU)
	}
	return a, b, podMTU
}

// roundTrip sends size bytes from a to b and b echoes them back.
func roundTrip(a, b *net.UDPConn, size int) error {
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i)
	}
	if _, err := a.WriteToUDP(msg, b.LocalAddr().(*net.UDPAddr)); err != nil {
		return fmt.Errorf("send %d bytes: %w", size, err)
	}
	buf := make([]byte, 65536)
	_ = b.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := b.ReadFromUDP(buf)
	if err != nil {
		return fmt.Errorf("receive %d bytes: %w", size, err)
	}
	if n != size {
		return fmt.Errorf("received %d bytes, sent %d", n, size)
	}
	if _, err := b.WriteToUDP(buf[:n], from); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	_ = a.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _, err = a.ReadFromUDP(buf); err != nil || n != size {
		return fmt.Errorf("echo back: %d bytes, %v", n, err)
	}
	return nil
}

var fragCreates = regexp.MustCompile(`(?m)^Ip: .*`)

// ipFragCreates reads the Ip FragCreates counter inside n.
func ipFragCreates(t *testing.T, n *netnstest.Node) int {
	t.Helper()
	out, err := n.Exec("cat", "/proc/net/snmp")
	if err != nil {
		t.Fatalf("read snmp: %v %s", err, out)
	}
	lines := fragCreates.FindAllString(out, 2)
	if len(lines) != 2 {
		t.Fatalf("unexpected /proc/net/snmp:\n%s", out)
	}
	names, vals := strings.Fields(lines[0]), strings.Fields(lines[1])
	for i, name := range names {
		if name == "FragCreates" {
			v, _ := strconv.Atoi(vals[i])
			return v
		}
	}
	t.Fatal("no FragCreates counter")
	return 0
}

func testFullSizeDatagrams(t *testing.T, mode config.RoutingMode, wantMTU int) {
	a, b, podMTU := twoNodes(t, mode)
	if podMTU != wantMTU {
		t.Fatalf("pod MTU %d, want %d", podMTU, wantMTU)
	}
	ca := netnstest.DFUDP(t, a.NS.Path(), "10.244.1.5:7001")
	cb := netnstest.DFUDP(t, b.NS.Path(), "10.244.2.5:7002")
	fragA, fragB := ipFragCreates(t, a), ipFragCreates(t, b)
	// The largest datagram a pod with this MTU may send with DF (IP 20 + UDP 8).
	if err := roundTrip(ca, cb, podMTU-28); err != nil {
		t.Fatalf("%s: full-size DF datagram pod->pod failed: %v", mode, err)
	}
	if err := roundTrip(ca, cb, 100); err != nil {
		t.Fatalf("%s: small datagram failed: %v", mode, err)
	}
	if mode == config.ModeVXLAN {
		l, err := a.Handle.LinkByName("trellis.vxlan")
		if err != nil || l.Attrs().Statistics == nil || l.Attrs().Statistics.TxPackets < 2 || l.Attrs().Statistics.RxPackets < 2 {
			t.Errorf("traffic did not go through the VXLAN device: %v %+v", err, l)
		}
	}
	if da, db := ipFragCreates(t, a)-fragA, ipFragCreates(t, b)-fragB; da != 0 || db != 0 {
		t.Errorf("%s: %d/%d fragments created on the path; want none", mode, da, db)
	}
	// One byte more must be refused at the sender, not black-holed.
	_, err := ca.WriteToUDP(make([]byte, podMTU-27), cb.LocalAddr().(*net.UDPAddr))
	if !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("%s: oversize DF datagram: err %v, want EMSGSIZE", mode, err)
	}
}

func TestKernelPacketsNativeFullSizeDF(t *testing.T) {
	testFullSizeDatagrams(t, config.ModeNative, 1500)
}

func TestKernelPacketsVXLANFullSizeDF(t *testing.T) {
	testFullSizeDatagrams(t, config.ModeVXLAN, 1450)
}
