//go:build kernel

package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/dns/dnsmessage"
)

// TestKernelLookupFromNetnsFollowsTheSearchPath runs a DNS server inside a
// throwaway network namespace that knows only x.b.test, and resolves "x" from
// inside that namespace with search path a.test b.test, over UDP and TCP: the
// lookup must ask x.a.test first (answered "no such name"), then find
// x.b.test. A server that never answers must end in ErrNoAnswer, a name it
// does not know in ErrNoSuchName.
func TestKernelLookupFromNetnsFollowsTheSearchPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestKernelLookupFromNetnsFollowsTheSearchPath needs root (network namespaces)")
	}
	name := fmt.Sprintf("tlkdns%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	nsPath := "/run/netns/" + name
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	want := netip.MustParseAddr("10.1.2.3")
	var udp net.PacketConn
	var tcp net.Listener
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		if udp, err = net.ListenPacket("udp", "127.0.0.1:53"); err != nil {
			return err
		}
		tcp, err = net.Listen("tcp", "127.0.0.1:53")
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", name, err)
	}
	t.Cleanup(func() { udp.Close(); tcp.Close() })
	var mu sync.Mutex
	var asked []string
	answer := func(q []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		return testDNSAnswer(t, q, "x.b.test.", want, &asked)
	}
	go serveUDP(udp, answer)
	go serveTCP(tcp, answer)

	rc := ResolvConf{Nameservers: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Search: []string{"a.test", "b.test"}, Ndots: 5}
	for _, proto := range []string{"udp", "tcp"} {
		mu.Lock()
		asked = nil
		mu.Unlock()
		ans, err := LookupFromNetns(context.Background(), nsPath, rc, "x", proto, 2*time.Second)
		if err != nil || ans.Name != "x.b.test." || !slices.Equal(ans.Addrs, []netip.Addr{want}) ||
			!slices.Equal(ans.Tried, []string{"x.a.test."}) {
			t.Errorf("%s: lookup of x = %+v, %v; want x.b.test. = %s after x.a.test.", proto, ans, err, want)
		}
		mu.Lock()
		if len(asked) == 0 || asked[0] != "x.a.test." {
			t.Errorf("%s: the server was asked %v; want x.a.test. first", proto, asked)
		}
		mu.Unlock()
	}
	if _, err := LookupFromNetns(context.Background(), nsPath, rc, "y", "udp", 2*time.Second); !errors.Is(err, ErrNoSuchName) {
		t.Errorf("lookup of an unknown name: %v; want ErrNoSuchName", err)
	}
	silent := rc
	silent.Nameservers = []netip.Addr{netip.MustParseAddr("127.0.0.2")} // nothing listens there
	if _, err := LookupFromNetns(context.Background(), nsPath, silent, "x", "udp", 500*time.Millisecond); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("lookup from a silent server: %v; want ErrNoAnswer", err)
	}
}

// testDNSAnswer answers an A query for known with addr, any other name with
// NXDOMAIN, and records the names asked.
func testDNSAnswer(t *testing.T, query []byte, known string, addr netip.Addr, asked *[]string) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		t.Errorf("server: bad query: %v", err)
		return nil
	}
	q, err := p.Question()
	if err != nil {
		t.Errorf("server: no question: %v", err)
		return nil
	}
	*asked = append(*asked, q.Name.String())
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError}
	found := q.Name.String() == known
	if found {
		rh.RCode = dnsmessage.RCodeSuccess
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	if found && q.Type == dnsmessage.TypeA {
		_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 30},
			dnsmessage.AResource{A: addr.As4()})
	}
	out, err := b.Finish()
	if err != nil {
		t.Errorf("server: building the answer: %v", err)
	}
	return out
}

func serveUDP(c net.PacketConn, answer func([]byte) []byte) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		if out := answer(buf[:n]); out != nil {
			_, _ = c.WriteTo(out, from)
		}
	}
}

func serveTCP(l net.Listener, answer func([]byte) []byte) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			for {
				var n uint16
				if binary.Read(c, binary.BigEndian, &n) != nil {
					return
				}
				q := make([]byte, n)
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				out := answer(q)
				if out == nil {
					return
				}
				_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
			}
		}()
	}
}
