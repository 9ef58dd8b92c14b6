//go:build kernel

package conntrack_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
)

// pluginDir holds the trellis-cni binary built for this test run.
var pluginDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the conntrack kernel tests need root (network namespaces, veth, nftables, conntrack)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "trellis-ct-cni-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := cnirunner.BuildPlugin(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func uniq() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newNetNS makes a named throwaway namespace, removed at cleanup.
func newNetNS(t *testing.T, prefix string) ns.NetNS {
	t.Helper()
	name := prefix + uniq()
	n, err := cnirunner.NewNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := cnirunner.DeleteNetNS(name); err != nil {
			t.Error(err)
		}
	})
	return n
}

// node is one throwaway node namespace with the real plugin (through
// libcni) and the real policy compiler's table.
type node struct {
	t      *testing.T
	ns     ns.NetNS
	runner *cnirunner.Runner
}

// podNamespace is the namespace cnirunner passes in CNI_ARGS.
const podNamespace = "trellis"

func newNode(t *testing.T, subnets []string) *node {
	t.Helper()
	n := &node{t: t, ns: newNetNS(t, "trl-ctn-")}
	if err := cnirunner.Sysctl(n.ns, "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if err := n.ns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("192.0.2.1"), Mask: net.CIDRMask(32, 32)}})
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conflist, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "trellis-ct", "plugins": []any{map[string]any{
		"type": "trellis-cni", "mtu": 1400,
		"ipam":          map[string]any{"subnets": subnets, "dataDir": filepath.Join(dir, "ipam")},
		"nodeStateFile": filepath.Join(dir, "node-state.json"),
		"logFile":       filepath.Join(dir, "cni.log"),
	}}})
	var err error
	if n.runner, err = cnirunner.New(conflist, []string{pluginDir}, t.TempDir(), n.ns); err != nil {
		t.Fatal(err)
	}
	return n
}

type pod struct {
	id     string
	ns     ns.NetNS
	labels map[string]string
	addr   netip.Addr
	index  int // host-side interface index
}

func (n *node) newPod(app string) *pod {
	p := &pod{ns: newNetNS(n.t, "trl-ctp-"), labels: map[string]string{"app": app}}
	p.id = "ctr-" + app + "-" + uniq()
	return p
}

func (p *pod) iface() string { return podlink.HostName(p.id, "eth0") }

// add runs the plugin's ADD and records the pod's address and interface.
func (n *node) add(p *pod) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := n.runner.Add(ctx, p.id, p.ns.Path(), "eth0")
	if err != nil {
		n.t.Fatalf("ADD %s: %v", p.id, err)
	}
	var out struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	data, _ := json.Marshal(res)
	if err := json.Unmarshal(data, &out); err != nil || len(out.IPs) == 0 {
		n.t.Fatalf("ADD %s: result without ips: %s", p.id, data)
	}
	pfx, err := netip.ParsePrefix(out.IPs[0].Address)
	if err != nil {
		n.t.Fatal(err)
	}
	p.addr = pfx.Addr()
	if err := n.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(p.iface())
		if err == nil {
			p.index = l.Attrs().Index
		}
		return err
	}); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) del(p *pod) {
	n.t.Helper()
	if err := n.runner.Del(context.Background(), p.id, p.ns.Path(), "eth0"); err != nil {
		n.t.Fatalf("DEL %s: %v", p.id, err)
	}
}

// program compiles the policy table for pods (all on this node, in one
// namespace) and policies, and applies it in the node namespace, as the
// agent's policy controller does.
func (n *node) program(pods []*pod, policies ...*networkingv1.NetworkPolicy) {
	n.t.Helper()
	s := &policy.Snapshot{NodeName: "n1", Namespaces: []policy.Namespace{{Name: podNamespace}}, Policies: policies}
	for _, p := range pods {
		s.Pods = append(s.Pods, policy.Pod{Namespace: podNamespace, Name: p.id, Labels: p.labels,
			IPs: []netip.Addr{p.addr}, NodeName: "n1", Interface: p.iface()})
	}
	if err := n.ns.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, policy.TableName)
		if err != nil {
			return err
		}
		_, err = policy.Apply(context.Background(), nft, policy.Compile(s))
		return err
	}); err != nil {
		n.t.Fatalf("program the policy table: %v", err)
	}
}

// denyAll isolates the pods labelled app in both directions, allowing
// nothing.
func denyAll(app string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: podNamespace, Name: "deny-" + app},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
}

// udp opens a UDP socket on port inside the pod's namespace (it stays
// there) and counts what it receives, by payload.
type udpSock struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  map[string]int
}

func (p *pod) udp(t *testing.T, port int) *udpSock {
	t.Helper()
	s := &udpSock{got: map[string]int{}}
	if err := p.ns.Do(func(ns.NetNS) error {
		var err error
		s.conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := s.conn.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			s.mu.Lock()
			s.got[string(buf[:n])]++
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *udpSock) count(payload string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[payload]
}

func (s *udpSock) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.got {
		n += c
	}
	return n
}

// sendTo sends payload to dst (errors, such as ICMP unreachables reported
// on the socket, are ignored: the senders keep going whatever happens).
func (s *udpSock) sendTo(dst netip.AddrPort, payload string) bool {
	_, err := s.conn.WriteToUDPAddrPort([]byte(payload), dst)
	return err == nil
}

// keepSending sends payload to dst every interval until stop is closed,
// counting the packets sent.
func (s *udpSock) keepSending(dst netip.AddrPort, payload string, every time.Duration, stop <-chan struct{}, sent *atomic.Int64) {
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if s.sendTo(dst, payload) {
					sent.Add(1)
				}
			}
		}
	}()
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// entriesNaming lists the conntrack entries (of a's family) in n that name
// a as an original or reply source or destination.
func entriesNaming(t *testing.T, n ns.NetNS, a netip.Addr) []*netlink.ConntrackFlow {
	t.Helper()
	var out []*netlink.ConntrackFlow
	fam := netlink.InetFamily(netlink.FAMILY_V4)
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	if err := n.Do(func(ns.NetNS) error {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			return err
		}
		ip := net.IP(a.AsSlice())
		for _, f := range flows {
			if f.Forward.SrcIP.Equal(ip) || f.Forward.DstIP.Equal(ip) || f.Reverse.SrcIP.Equal(ip) || f.Reverse.DstIP.Equal(ip) {
				out = append(out, f)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("list conntrack: %v", err)
	}
	return out
}
