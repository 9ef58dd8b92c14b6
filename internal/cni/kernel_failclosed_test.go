//go:build kernel

package cni_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/sysctl"
)

// The plugin alone on a host whose IPv4 forwarding is off: ADD turns it on
// (as ptp does), so two pods on the host reach each other.
func TestKernelAddEnablesForwarding(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.88.7.0/24"}, forwardingOff: true})
	a, b := f.newPodNS(), f.newPodNS()
	f.mustAdd(a)
	f.mustAdd(b)
	got, err := sysctl.Netns{NS: f.node}.Get("net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	if got != "1" {
		t.Fatalf("ADD succeeded with net.ipv4.ip_forward=%s on the host", got)
	}
	serveEcho(t, b.ns, 8080)
	mustReach(t, a.ns, b.addr, 8080, "two pods wired by the plugin alone")
}

// foreignVeth creates, in the node namespace, a veth pair whose first end
// has the given name and no alias: someone else's interface.
func (f *fixture) foreignVeth(name string) {
	f.t.Helper()
	err := f.node.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "frgn" + uniq()})
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) linkExists(name string) bool {
	f.t.Helper()
	var ok bool
	_ = f.node.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName(name)
		ok = err == nil
		return nil
	})
	return ok
}

// ADD never deletes a host interface of the attachment's name that is not
// Trellis's: it fails and names it.
func TestKernelAddRefusesForeignHostLink(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.88.8.0/24"}})
	p := f.newPodNS()
	name := podlink.HostName(p.id, "eth0")
	f.foreignVeth(name)
	err := f.add(p)
	if err == nil || !strings.Contains(err.Error(), "not Trellis's") {
		t.Fatalf("ADD over a foreign %s: want a 'not Trellis's' error, got %v", name, err)
	}
	if !f.linkExists(name) {
		t.Fatalf("ADD deleted the foreign interface %s", name)
	}
	if al := f.allocations(); len(al) != 0 {
		t.Fatalf("failed ADD kept allocations %v", al)
	}
}

// GC goes on past failures and reports every one: two stale attachments
// whose interface name is now held by foreign interfaces both fail (and
// keep their addresses), while the other stale attachment is still
// removed and released and the valid one is untouched.
func TestKernelGCReportsAllFailures(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.88.9.0/24"}})
	pods := f.addPods(4)
	keep, stale, squatted := pods[0], pods[1], pods[2:]
	for _, p := range squatted {
		name := podlink.HostName(p.id, "eth0")
		err := f.node.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			return netlink.LinkDel(l)
		})
		if err != nil {
			t.Fatal(err)
		}
		f.foreignVeth(name)
	}
	// A runner with an empty result cache: libcni then only calls the
	// plugin's GC (with cached results it would first DEL each stale one).
	gc, err := cnirunner.New(f.runner.List.Bytes, []string{pluginDir}, t.TempDir(), f.node)
	if err != nil {
		t.Fatal(err)
	}
	err = gc.GC(context.Background(), []types.GCAttachment{{ContainerID: keep.id, IfName: "eth0"}})
	if err == nil {
		t.Fatal("GC reported success although two interfaces could not be removed")
	}
	for _, p := range squatted {
		name := podlink.HostName(p.id, "eth0")
		if !strings.Contains(err.Error(), name) {
			t.Errorf("GC error does not name %s: %v", name, err)
		}
		if !f.linkExists(name) {
			t.Errorf("GC deleted the foreign interface %s", name)
		}
	}
	held := map[string]bool{}
	for _, a := range f.allocations() {
		held[a.ContainerID] = true
	}
	if !held[keep.id] || held[stale.id] || !held[squatted[0].id] || !held[squatted[1].id] {
		t.Errorf("allocations after GC %v: want the valid and the two failed ones, not the stale one", held)
	}
	if f.linkExists(podlink.HostName(stale.id, "eth0")) {
		t.Error("GC stopped before removing the stale attachment's interface")
	}
	if t.Failed() {
		t.Logf("GC error: %v", err)
	}
}

// With requireDataplane (the agent's conflist), ADD fails with CNI error 11
// and STATUS with 50 until the node state file says the base dataplane is
// in place, from this boot, with its table present; deleting the table
// closes the gate again.
func TestKernelDataplaneGate(t *testing.T) {
	f := newFixture(t, confOpts{requireDataplane: true})
	path := f.stateDir + "/node-state.json"
	table := map[string]string{"family": "inet", "name": "trl-gate-" + uniq()}
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	boot := strings.TrimSpace(string(bootID))
	p := f.newPodNS()
	closed := func(when, want string) {
		t.Helper()
		var te *types.Error
		err := f.add(p)
		if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, want) {
			t.Fatalf("ADD %s: want CNI error 11 mentioning %q, got %v", when, want, err)
		}
		err = f.runner.Status(context.Background())
		if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
			t.Fatalf("STATUS %s: want CNI error 50, got %v", when, err)
		}
		if al := f.allocations(); len(al) != 0 {
			t.Fatalf("refused ADD %s kept allocations %v", when, al)
		}
	}
	// The file as the agent writes it (JSON, so that this test reads the
	// contract rather than the Go types).
	write := func(dp map[string]any) {
		t.Helper()
		s := map[string]any{"version": 1, "nodeName": "n1", "podCIDRs": []string{"10.88.10.0/24"}, "ready": true}
		if dp != nil {
			s["dataplane"] = dp
		}
		data, _ := json.Marshal(s)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	nft := func(args ...string) {
		t.Helper()
		err := f.node.Do(func(ns.NetNS) error {
			out, err := exec.Command("nft", args...).CombinedOutput()
			if err != nil {
				return errors.New(string(out))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("nft %v: %v", args, err)
		}
	}

	write(nil)
	closed("before the agent programmed the base", "policy and anti-spoofing base")
	write(map[string]any{"bootID": "00000000-0000-0000-0000-000000000000", "nftTables": []any{table}})
	closed("with a marker from another boot", "another boot")
	write(map[string]any{"bootID": boot, "nftTables": []any{table}})
	closed("with the table missing", "missing")

	nft("add", "table", table["family"], table["name"])
	if err := f.runner.Status(context.Background()); err != nil {
		t.Fatalf("STATUS with the base in place: %v", err)
	}
	f.mustAdd(p)

	// A foreign flush or deletion closes the gate although the marker stays.
	nft("delete", "table", table["family"], table["name"])
	q := f.newPodNS()
	var te *types.Error
	if err := f.add(q); !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD after the table was deleted: want CNI error 11, got %v", err)
	}
}
