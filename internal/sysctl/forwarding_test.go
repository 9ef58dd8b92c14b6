package sysctl

import (
	"reflect"
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/sysctl/sysctltest"
)

func TestEnableIPv6ForwardingRaisesAcceptRA(t *testing.T) {
	root := t.TempDir()
	sysctltest.WriteTree(t, root, map[string]string{
		"net/ipv6/conf/all/forwarding":    "0",
		"net/ipv6/conf/all/accept_ra":     "1",
		"net/ipv6/conf/default/accept_ra": "1",
		"net/ipv6/conf/lo/accept_ra":      "1",
		"net/ipv6/conf/eth0/accept_ra":    "1",
		"net/ipv6/conf/eth1/accept_ra":    "0", // the operator said no
		"net/ipv6/conf/eth2/accept_ra":    "2",
		"net/ipv6/conf/trl0123/accept_ra": "1", // a pod interface: skipped
	})
	p := Proc{Root: root}
	raised, err := p.EnableIPv6Forwarding(func(n string) bool { return strings.HasPrefix(n, "trl") })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"eth0"}; !reflect.DeepEqual(raised, want) {
		t.Errorf("raised %v, want %v", raised, want)
	}
	for key, want := range map[string]string{
		"net/ipv6/conf/all/forwarding": "1", "net/ipv6/conf/all/accept_ra": "1", "net/ipv6/conf/default/accept_ra": "1",
		"net/ipv6/conf/lo/accept_ra": "1", "net/ipv6/conf/eth0/accept_ra": "2", "net/ipv6/conf/eth1/accept_ra": "0",
		"net/ipv6/conf/eth2/accept_ra": "2", "net/ipv6/conf/trl0123/accept_ra": "1",
	} {
		if v, err := p.Get(key); err != nil || v != want {
			t.Errorf("%s = %q (%v), want %q", key, v, err, want)
		}
	}
}

// Forwarding already on: somebody chose the RA settings; nothing changes.
func TestEnableIPv6ForwardingAlreadyOnChangesNothing(t *testing.T) {
	root := t.TempDir()
	sysctltest.WriteTree(t, root, map[string]string{
		"net/ipv6/conf/all/forwarding": "1",
		"net/ipv6/conf/eth0/accept_ra": "1",
	})
	p := Proc{Root: root}
	raised, err := p.EnableIPv6Forwarding(nil)
	if err != nil || len(raised) != 0 {
		t.Fatalf("raised %v, err %v; want nothing", raised, err)
	}
	if v, _ := p.Get("net/ipv6/conf/eth0/accept_ra"); v != "1" {
		t.Errorf("eth0 accept_ra = %q, want 1 untouched", v)
	}
}

func TestEnableIPv6ForwardingWithoutIPv6Fails(t *testing.T) {
	if _, err := (Proc{Root: t.TempDir()}).EnableIPv6Forwarding(nil); err == nil {
		t.Error("no net/ipv6 tree, yet no error")
	}
}
