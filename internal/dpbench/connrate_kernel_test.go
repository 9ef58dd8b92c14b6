//go:build kernel

package dpbench

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/netnstest"
)

// TestKernelConnRateKeepsNoClientPorts: the connection-rate probe, with the
// client's ephemeral range cut to 2,000 ports, makes twice that many
// connections without holding a single client port in TIME_WAIT, while the
// probe whose client closes first runs out of ports after 2,000: the
// artefact that made the lab's connection rate swing tenfold (there the
// server's close raced the client's, so the ports were not exhausted but
// held by the thousands, and connect() slowed to a crawl scanning them).
func TestKernelConnRateKeepsNoClientPorts(t *testing.T) {
	a, b := netnstest.NewLinkedNodes(t, "10.0.1.11/24", "10.0.1.12/24")
	if out, err := a.Exec("sysctl", "-w", "net.ipv4.ip_local_port_range=40000 41999"); err != nil {
		t.Fatalf("narrow the client's port range: %v: %s", err, out)
	}
	var ln net.Listener
	if err := b.NS.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", "10.0.1.12:5202")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { _ = ServeCloseFirst(ln) }()
	client, server := Netns(a.NS.Path()), Netns(b.NS.Path())

	c0, err := ReadCounters(client, false)
	if err != nil {
		t.Fatal(err)
	}
	s0, err := ReadCounters(server, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ConnRateLoop(client, ln.Addr().String(), ConnRateOptions{Count: 4000})
	if err != nil {
		t.Fatalf("server-closes-first probe, 4,000 connections over 2,000 ports: %v", err)
	}
	c1, err := ReadCounters(client, false)
	if err != nil {
		t.Fatal(err)
	}
	s1, err := ReadCounters(server, false)
	if err != nil {
		t.Fatal(err)
	}
	dc, ds := c1.Sub(c0), s1.Sub(s0)
	t.Logf("server closes first: %s; client %s; server %s", r, dc.Show(ClientCounters...), ds.Show(ServerCounters...))
	if r.Connections != 4000 {
		t.Errorf("%d connections, want 4000", r.Connections)
	}
	if tw := c1["TCP:tw"]; tw > 10 {
		t.Errorf("client holds %d sockets in TIME_WAIT, want none", tw)
	}
	if n := dc["TcpExt:TCPSynRetrans"]; n != 0 {
		t.Errorf("%d SYNs retransmitted, want 0 (each costs the 1 s initial RTO)", n)
	}
	if n := ds["TcpExt:TW"]; n < 3900 {
		t.Errorf("server put %d sockets in TIME_WAIT, want every connection's (≥ 3900): the server is not the side that closes first", n)
	}

	// The client-closes-first probe against a server that closes only
	// after the client (so no race between the two FINs): every connection
	// keeps its client port in TIME_WAIT for 60 s, and the ports run out.
	var late net.Listener
	if err := b.NS.Do(func(ns.NetNS) error {
		var err error
		late, err = net.Listen("tcp4", "10.0.1.12:5203")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	go func() {
		for {
			c, err := late.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	r, err = ConnRateLoop(client, late.Addr().String(), ConnRateOptions{Count: 4000, CloseClientFirst: true})
	t.Logf("client closes first: %d connections, then %v", r.Connections, err)
	if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) || r.Connections < 1900 || r.Connections > 2050 {
		t.Errorf("client-closes-first probe: %d connections over 2,000 ports, then %v; want about 2,000, then EADDRNOTAVAIL", r.Connections, err)
	}
}
