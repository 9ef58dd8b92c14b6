//go:build kernel

package uninstall

import (
	"os"
	"reflect"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/sysctl"
)

// Node setup's IPv6 forwarding in a real namespace: the uplink whose
// accept_ra is 1 gets 2 before forwarding goes on, a pod interface and a
// VXLAN device keep theirs, an uplink with 0 keeps 0; the previous values
// are recorded, and Restore (uninstall's last step) puts every one back.
func TestKernelIPv6ForwardingRecordedAndRestored(t *testing.T) {
	node := netnstest.NewNode(t, "192.168.214.1/24")
	h := node.Handle
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "trl0123456789a"}, PeerName: "trlpeer"}); err != nil {
		t.Fatalf("add pod veth: %v", err)
	}
	if err := h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxtest"}, VxlanId: 7, Port: 4789}); err != nil {
		t.Fatalf("add VXLAN device: %v", err)
	}
	sys := nodesetup.NetnsSysctls{NS: node.NS}
	before := map[string]string{
		"net/ipv6/conf/all/forwarding":           "0",
		"net/ipv6/conf/ul0/accept_ra":            "1",
		"net/ipv6/conf/ul0p/accept_ra":           "0",
		"net/ipv6/conf/trl0123456789a/accept_ra": "1",
		"net/ipv6/conf/vxtest/accept_ra":         "1",
	}
	for k, v := range before {
		if err := sys.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	record := RecordPath(t.TempDir())
	var raised []string
	if err := node.NS.Do(func(ns.NetNS) error {
		var err error
		raised, err = nodesetup.RecordedIPv6Forwarding{Sysctls: Recorder{Sysctls: sysctl.Proc{}, File: record}, Interfaces: sysctl.Proc{}}.EnableIPv6Forwarding()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"ul0"}; !reflect.DeepEqual(raised, want) {
		t.Errorf("raised %v, want %v", raised, want)
	}
	for k, want := range map[string]string{
		"net/ipv6/conf/all/forwarding": "1", "net/ipv6/conf/ul0/accept_ra": "2", "net/ipv6/conf/ul0p/accept_ra": "0",
		"net/ipv6/conf/trl0123456789a/accept_ra": "1", "net/ipv6/conf/vxtest/accept_ra": "1",
	} {
		if v, err := sys.Get(k); err != nil || v != want {
			t.Errorf("%s = %q (%v), want %q", k, v, err, want)
		}
	}
	n, err := Restore(sys, record)
	if err != nil || n != 2 {
		t.Fatalf("Restore = %d, %v; want 2 (forwarding, ul0's accept_ra)", n, err)
	}
	for k, want := range before {
		if v, err := sys.Get(k); err != nil || v != want {
			t.Errorf("after Restore %s = %q (%v), want %q", k, v, err, want)
		}
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Errorf("sysctl record left after Restore: %v", err)
	}
}
