//go:build kernel

package drops

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/netnstest"
)

// The reader bound to a deny-log group receives the IPv6 packets an inet
// table logs there (as the policy and strict encryption tables do), and
// the source decodes them: addresses, protocol, ports, verdict.
func TestKernelDenyLogDecodesIPv6(t *testing.T) {
	const group = 4713
	node := netnstest.NewNode(t, "192.168.215.1/24")
	ruleset := `table inet trellis-test {
	chain out {
		type filter hook output priority 0; policy accept;
		meta nfproto ipv6 udp dport 9999 log prefix "trellis-deny spoofed: " group 4713 drop
	}
}`
	cmd := exec.Command("ip", "netns", "exec", node.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	if out, err := node.Exec("ip", "link", "set", "lo", "up"); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	var r *Reader
	if err := node.NS.Do(func(ns.NetNS) error {
		var err error
		r, err = Open(group)
		return err
	}); err != nil {
		t.Fatalf("open the nflog group: %v", err)
	}
	defer r.Close()
	src, err := NewSource(Config{Node: "n1", Group: group, Ring: NewRing(10, 0, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.NS.Do(func(ns.NetNS) error {
		c, err := net.DialUDP("udp6", &net.UDPAddr{IP: net.ParseIP("::1"), Port: 4242}, &net.UDPAddr{IP: net.ParseIP("::1"), Port: 9999})
		if err != nil {
			return err
		}
		defer c.Close()
		// The output hook's drop answers the sender with EPERM.
		if _, err := c.Write([]byte("dropped")); err != nil && !errors.Is(err, syscall.EPERM) {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := r.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		recs, err := r.Receive()
		if err != nil {
			t.Fatalf("no IPv6 deny-log record within 2 s: %v", err)
		}
		for i := range recs {
			d, ok := src.Decode(&recs[i])
			if !ok {
				t.Fatalf("IPv6 record not decoded: %+v", recs[i])
			}
			if d.Src.IP != "::1" || d.Dst.IP != "::1" || d.Src.Port != 4242 || d.Dst.Port != 9999 || d.Protocol != "UDP" || d.Verdict != VerdictSpoofed {
				t.Fatalf("decoded %+v", d)
			}
			if a, _ := netip.ParseAddr(d.Src.IP); !a.Is6() {
				t.Fatalf("source %s is not IPv6", d.Src.IP)
			}
			return
		}
	}
}
