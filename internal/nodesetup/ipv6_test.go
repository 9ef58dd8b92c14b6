package nodesetup

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/routing"
)

// fakeForwarder counts EnableIPv6Forwarding calls.
type fakeForwarder struct {
	calls int
	err   error
}

func (f *fakeForwarder) EnableIPv6Forwarding() ([]string, error) {
	f.calls++
	return []string{"eth0"}, f.err
}

func dualNode() *v1.Node {
	n := testNode("10.244.1.0/24", "fd00:10:244:1::/64")
	n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: "fd00:1::11"})
	return n
}

func v6OnlyNode() *v1.Node {
	n := testNode("fd00:10:244:1::/64")
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "fd00:1::11"}}
	return n
}

func (f *fixture) withForwarder() *fakeForwarder {
	fw := &fakeForwarder{}
	f.c.fwd6 = fw
	return fw
}

// A dual-stack Node: IPv6 forwarding is turned on (once per sync, the
// forwarder itself is idempotent), IPv4's ip_forward as always, and the
// node state file carries both pod CIDRs for the plugin.
func TestDualStackNodeTurnsIPv6ForwardingOnAndWritesBothCIDRs(t *testing.T) {
	f := newFixture(t, dualNode(), config.ModeVXLAN)
	fw := f.withForwarder()
	f.routes.ready = true
	if err := f.c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fw.calls != 1 || f.sys["net/ipv4/ip_forward"] != "1" {
		t.Errorf("IPv6 forwarding calls %d, sysctls %v: want both families forwarding", fw.calls, f.sys)
	}
	st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}
	if !reflect.DeepEqual(st.PodCIDRs, want) || !st.Ready || st.Dataplane == nil {
		t.Errorf("node state %+v: want ready, marker, pod CIDRs %v", st, want)
	}
	if got := f.apiNode(t).Annotations[routing.AnnotationNodeIP]; got != "10.0.1.11" {
		t.Errorf("node-ip annotation %q, want the IPv4 address on a dual-stack node", got)
	}
}

// An IPv4-only Node never touches IPv6 (its behaviour is unchanged).
func TestIPv4NodeLeavesIPv6Alone(t *testing.T) {
	f := newFixture(t, testNode("10.244.1.0/24"), config.ModeVXLAN)
	fw := f.withForwarder()
	f.cfg.RoutingMode = config.ModeBGP // IPv4 under bgp: no refusal either
	if err := f.c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fw.calls != 0 {
		t.Errorf("IPv6 forwarding turned on for an IPv4-only node (%d calls)", fw.calls)
	}
}

// An IPv6-only Node (no IPv4 InternalIP) is set up from its IPv6 address.
func TestIPv6OnlyNode(t *testing.T) {
	f := newFixture(t, v6OnlyNode(), config.ModeNative)
	fw := f.withForwarder()
	f.routes.ready = true
	if err := f.c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fw.calls != 1 {
		t.Errorf("IPv6 forwarding calls %d, want 1", fw.calls)
	}
	st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil || !st.Ready || len(st.PodCIDRs) != 1 || !st.PodCIDRs[0].Addr().Is6() || st.MTU != 1500 {
		t.Errorf("node state %+v, %v: want ready with the IPv6 pod CIDR and the underlay's MTU", st, err)
	}
	if got := f.apiNode(t).Annotations[routing.AnnotationNodeIP]; got != "fd00:1::11" {
		t.Errorf("node-ip annotation %q, want the IPv6 address of an IPv6-only node", got)
	}
}

// A failing IPv6 forwarding change keeps the node not ready.
func TestIPv6ForwardingFailureKeepsNodeNotReady(t *testing.T) {
	for name, fw := range map[string]IPv6Forwarder{"failing": &fakeForwarder{err: errors.New("EPERM")}, "none": nil} {
		f := newFixture(t, dualNode(), config.ModeVXLAN)
		f.c.fwd6 = fw
		f.routes.ready = true
		if err := f.c.Sync(context.Background()); err == nil {
			t.Errorf("%s: Sync succeeded", name)
		}
		if st, err := podlink.ReadNodeState(f.cfg.NodeStateFile); err != nil || st.Ready || st.Dataplane != nil {
			t.Errorf("%s: node state %+v, %v: want not ready, no dataplane marker", name, st, err)
		}
	}
}

// Configurations that cannot serve an IPv6 pod CIDR fail closed: the node
// state file is not ready and has no dataplane marker (the plugin wires
// no pod), NetworkUnavailable=True, the problem is reported, IPv6
// forwarding stays off; once the IPv6 pod CIDR goes, the node recovers.
func TestIPv6UnsupportedFailsClosed(t *testing.T) {
	no := false
	cases := map[string]struct {
		setup func(t *testing.T) *fixture
		want  string
	}{
		"encryption without strict mode": {func(t *testing.T) *fixture {
			f, _, _ := newEncryptedFixture(t, config.ModeVXLAN, nil)
			f.cfg.EncryptionStrict = &no
			return f
		}, "encryptionStrict"},
		"routingMode bgp": {func(t *testing.T) *fixture { return newFixture(t, testNode("10.244.1.0/24"), config.ModeBGP) }, "bgp"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := tc.setup(t)
			if err := f.idx.Update(dualNode()); err != nil {
				t.Fatal(err)
			}
			fw := f.withForwarder()
			r := &fakeReporter{active: map[string]string{}}
			f.c.SetReporter(r)
			f.routes.ready = true
			if err := f.c.Sync(ctx); err == nil {
				t.Fatal("Sync succeeded")
			}
			st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
			if err != nil || st.Ready || st.Dataplane != nil || !strings.Contains(st.Reason, tc.want) {
				t.Errorf("node state %+v, %v: want not ready, no marker, a reason naming %s", st, err, tc.want)
			}
			if !strings.Contains(r.active[ReasonIPv6Unsupported], tc.want) {
				t.Errorf("reported %v", r.active)
			}
			if c := f.networkCondition(t); c == nil || c.Status != v1.ConditionTrue || c.Reason != ConditionReasonIPv6Unsupported {
				t.Errorf("NetworkUnavailable %+v, want True/%s", c, ConditionReasonIPv6Unsupported)
			}
			if fw.calls != 0 {
				t.Error("IPv6 forwarding turned on for a refused node")
			}
			if err := f.idx.Update(testNode("10.244.1.0/24")); err != nil {
				t.Fatal(err)
			}
			if err := f.c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			st, err = podlink.ReadNodeState(f.cfg.NodeStateFile)
			if err != nil || !st.Ready || st.Dataplane == nil || len(r.active) != 0 {
				t.Errorf("after the IPv6 pod CIDR went: state %+v, %v, problems %v; want ready, none", st, err, r.active)
			}
			if c := f.networkCondition(t); c == nil || c.Status != v1.ConditionFalse {
				t.Errorf("NetworkUnavailable %+v, want False", c)
			}
		})
	}
}

// Encryption in strict mode (the default) serves IPv6: the strict table
// drops IPv6 pod traffic to other nodes that does not leave through the
// WireGuard device.
func TestIPv6WithStrictEncryption(t *testing.T) {
	f, _, _ := newEncryptedFixture(t, config.ModeVXLAN, nil)
	if err := f.idx.Update(dualNode()); err != nil {
		t.Fatal(err)
	}
	fw := f.withForwarder()
	f.routes.ready = true
	if err := f.c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fw.calls != 1 {
		t.Errorf("IPv6 forwarding calls %d, want 1", fw.calls)
	}
	if why := f.cfg.IPv6Unsupported(); why != "" {
		t.Errorf("IPv6Unsupported = %q with strict encryption", why)
	}
}

// The pods of an IPv6-only node in VXLAN mode get the MTU of VXLAN over an
// IPv6 underlay: 70 bytes of headers, not IPv4's 50.
func TestIPv6OnlyNodeVXLANMTU(t *testing.T) {
	f := newFixture(t, v6OnlyNode(), config.ModeVXLAN)
	f.withForwarder()
	f.routes.ready = true
	if err := f.c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil || st.MTU != 1430 {
		t.Errorf("node state %+v, %v: want MTU 1500-70 = 1430", st, err)
	}
}
