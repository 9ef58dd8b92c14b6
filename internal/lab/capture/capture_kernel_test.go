//go:build kernel

package capture_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/lab/capture"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// TestKernelCaptureOnLabSwitch builds a lab underlay (namespaces with a
// test-unique prefix), captures on its switch while node1 sends datagrams
// carrying a known payload to node2 (another subnet: through the router)
// on the WireGuard port and on another port, and checks that the capture
// holds each datagram once per switch entry and nothing that was not sent.
func TestKernelCaptureOnLabSwitch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestKernelCaptureOnLabSwitch needs root (network namespaces)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo, err := topology.Plan(topology.Options{Nodes: 2, Subnets: 2, RoutingMode: "auto", APIPort: 16443,
		NetnsPrefix: fmt.Sprintf("tlc%d-", os.Getpid()%100000)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topology.DeleteNetns(context.Background(), topo.Netnses()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := topology.BuildNetwork(ctx, topo); err != nil {
		t.Fatal(err)
	}
	n1, n2 := topo.Nodes[0], topo.Nodes[1]
	secret := []byte(fmt.Sprintf("TRELLIS-CANARY-%d", time.Now().UnixNano()))
	file := filepath.Join(t.TempDir(), "switch.pcap")
	c, err := capture.Start(ctx, capture.Options{Netns: topo.SwitchNetns, InboundOnly: true, File: file,
		MaxPackets: 1000, MaxDuration: 20 * time.Second, Filter: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	const perPort = 5
	for _, port := range []int{51871, 40000} {
		// A listener on node2, so that no ICMP unreachable fails a send.
		var l net.PacketConn
		if err := ns.WithNetNSPath("/run/netns/"+n2.Netns, func(ns.NetNS) error {
			var err error
			l, err = net.ListenPacket("udp4", net.JoinHostPort(n2.Addr.String(), fmt.Sprint(port)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		conn, err := topology.DialInNetns("/run/netns/"+n1.Netns, "udp", net.JoinHostPort(n2.Addr.String(), fmt.Sprint(port)), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < perPort; i++ {
			if _, err := conn.Write(secret); err != nil {
				t.Fatalf("send %d to port %d: %v", i, port, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		conn.Close()
	}
	time.Sleep(200 * time.Millisecond)
	st, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	got, err := capture.AnalyzeFile(file, capture.Query{Payload: secret, UDPPort: 51871})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tcpdump: %+v; file: %v", st, got)
	// Inbound only: each datagram enters the switch twice, from node1's port
	// and from the router's port on node2's subnet.
	if got.PayloadHits != 4*perPort || got.UDPToPort != 2*perPort {
		t.Errorf("capture: %v; want the payload %d times and %d datagrams to 51871", got, 4*perPort, 2*perPort)
	}
	if st.Captured != got.Packets || st.LimitReached || st.TimedOut {
		t.Errorf("tcpdump stats %+v disagree with the file's %d frames", st, got.Packets)
	}
	other, err := capture.AnalyzeFile(file, capture.Query{Payload: []byte("TRELLIS-CANARY-never-sent")})
	if err != nil || other.PayloadHits != 0 {
		t.Errorf("a payload never sent was found: %v, %v", other, err)
	}
	if _, err := c.Stop(); err != nil && !strings.Contains(err.Error(), "statistics") {
		t.Errorf("second Stop: %v", err)
	}
}

// TestKernelCaptureBounds checks that a capture stops by itself at its
// packet count and at its duration, and that a missing namespace is a
// clear error.
func TestKernelCaptureBounds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestKernelCaptureBounds needs root (network namespaces)")
	}
	ctx := context.Background()
	name := fmt.Sprintf("tlcb%d", os.Getpid()%100000)
	for _, args := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = topology.DeleteNetns(context.Background(), []string{name}) })
	dir := t.TempDir()
	c, err := capture.Start(ctx, capture.Options{Netns: name, Interface: "lo", File: filepath.Join(dir, "a.pcap"),
		MaxPackets: 3, MaxDuration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := topology.DialInNetns("/run/netns/"+name, "udp", "127.0.0.1:9", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		_, _ = conn.Write([]byte("x"))
	}
	conn.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Error("tcpdump still runs 5 s after its packet count")
	}
	st, err := c.Stop()
	if err != nil || st.Captured != 3 || !st.LimitReached {
		t.Errorf("count bound: %+v, %v; want 3 packets and the limit reached", st, err)
	}
	start := time.Now()
	c, err = capture.Start(ctx, capture.Options{Netns: name, Interface: "lo", File: filepath.Join(dir, "b.pcap"),
		MaxPackets: 10, MaxDuration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Error("tcpdump still runs 5 s after its duration")
	}
	st, err = c.Stop()
	if err != nil || !st.TimedOut || time.Since(start) > 3*time.Second {
		t.Errorf("duration bound: %+v, %v after %s; want a timeout after 0.5 s", st, err, time.Since(start))
	}
	if _, err := capture.Start(ctx, capture.Options{Netns: name + "-missing", File: filepath.Join(dir, "c.pcap"),
		MaxPackets: 1, MaxDuration: time.Second}); err == nil {
		t.Error("a capture in a missing namespace started")
	}
}
