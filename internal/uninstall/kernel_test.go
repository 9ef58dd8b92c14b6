//go:build kernel

package uninstall

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

// Everything the agent makes on a node, set up in a throwaway namespace,
// is gone after uninstall; a foreign conflist stays; the recorded sysctl
// is back at its previous value; a second run finds nothing and succeeds.
func TestKernelUninstallRemovesEverything(t *testing.T) {
	node := netnstest.NewNode(t, "192.168.213.1/24")
	h := node.Handle
	dir := t.TempDir()
	confDir, binDir, stateDir := filepath.Join(dir, "net.d"), filepath.Join(dir, "bin"), filepath.Join(dir, "state")
	for _, d := range []string{confDir, binDir, stateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	own, err := nodesetup.RenderConflist(nodesetup.ConflistParams{CNIVersion: "1.0.0", MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		filepath.Join(confDir, nodesetup.ConflistName): own,
		filepath.Join(confDir, "05-trellis.conflist"):  own,
		filepath.Join(confDir, "20-other.conflist"):    []byte(`{"cniVersion":"1.0.0","name":"o","plugins":[{"type":"bridge"}]}`),
		filepath.Join(binDir, nodesetup.PluginName):    []byte("plugin"),
		filepath.Join(stateDir, "node-state.json"):     []byte("{}"),
	}
	for p, d := range files {
		if err := os.WriteFile(p, d, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The VXLAN device, routes tagged with Trellis's protocol (and one
	// that is not), both tables, the fast path on ul0, be_liberal set.
	ul0, err := h.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: config.DefaultVXLANDevice}, VxlanId: config.DefaultVXLANVNI,
		Port: config.DefaultVXLANPort, VtepDevIndex: ul0.Attrs().Index}
	if err := h.LinkAdd(vx); err != nil {
		t.Fatalf("add VXLAN device: %v", err)
	}
	// The VXLAN device over the IPv6 underlay.
	const vxlan6 = "trellis.vxlan6"
	if err := h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: vxlan6}, VxlanId: config.DefaultVXLANVNI + 1,
		Port: config.DefaultVXLANPort, VtepDevIndex: ul0.Attrs().Index}); err != nil {
		t.Fatalf("add IPv6-underlay VXLAN device: %v", err)
	}
	// The userspace engine's persistent TUN device and the key file.
	if out, err := exec.Command("ip", "-n", node.Name, "tuntap", "add", "dev", config.DefaultWireGuardDevice, "mode", "tun").CombinedOutput(); err != nil {
		t.Fatalf("add TUN device: %v: %s", err, out)
	}
	keyFile := filepath.Join(stateDir, "wireguard.key")
	files[keyFile] = []byte("key")
	if err := os.WriteFile(keyFile, files[keyFile], 0o600); err != nil {
		t.Fatal(err)
	}
	_, ours, _ := net.ParseCIDR("10.244.9.0/24")
	_, theirs, _ := net.ParseCIDR("10.99.0.0/24")
	gw := net.ParseIP("192.168.213.2")
	_, ownPods, _ := net.ParseCIDR("10.244.1.0/24")
	_, bgpLearned, _ := net.ParseCIDR("198.18.100.0/24")
	for _, r := range []*netlink.Route{
		{Dst: ours, Gw: gw, LinkIndex: ul0.Attrs().Index, Protocol: netlinkprog.RouteProtocol},
		// The own pod CIDR's unreachable route.
		{Dst: ownPods, Type: unix.RTN_UNREACHABLE, Protocol: netlinkprog.RouteProtocol},
		{Dst: theirs, Gw: gw, LinkIndex: ul0.Attrs().Index, Protocol: unix.RTPROT_STATIC},
		// A route BGP learned.
		{Dst: bgpLearned, Gw: gw, LinkIndex: ul0.Attrs().Index, Protocol: bgpRouteProtocol},
	} {
		if err := h.RouteAdd(r); err != nil {
			t.Fatalf("add route %s: %v", r.Dst, err)
		}
	}
	for _, cmd := range [][]string{
		{"nft", "add", "table", "inet", policy.TableName},
		{"nft", "add", "table", "ip", masq.TableName},
		{"nft", "add", "table", "ip", "someone-else"},
	} {
		if out, err := node.Exec(cmd...); err != nil {
			t.Fatalf("%v: %v: %s", cmd, err, out)
		}
	}
	progs, err := fastpath.Load()
	if err != nil {
		t.Fatalf("load the fast path: %v", err)
	}
	defer progs.Close()
	k := &fastpath.Kernel{Handle: h}
	if err := k.Attach(ul0.Attrs().Index, fastpath.ProgFromPod, progs.FromPod); err != nil {
		t.Fatal(err)
	}
	sys := nodesetup.NetnsSysctls{NS: node.NS}
	record := RecordPath(stateDir)
	if err := sys.Set(fastpath.SysctlBeLiberal, "0"); err != nil {
		t.Fatal(err)
	}
	if err := (Recorder{Sysctls: sys, File: record}).Set(fastpath.SysctlBeLiberal, "1"); err != nil {
		t.Fatal(err)
	}
	// A restart of the agent must not record its own value.
	if err := (Recorder{Sysctls: sys, File: record}).Set(fastpath.SysctlBeLiberal, "1"); err != nil {
		t.Fatal(err)
	}

	opts := Options{CNIConfDir: confDir, CNIBinDir: binDir, NodeStateFile: filepath.Join(stateDir, "node-state.json"),
		VXLANDevice: config.DefaultVXLANDevice, VXLANDevice6: vxlan6, WireGuardDevice: config.DefaultWireGuardDevice, WireGuardKeyFile: keyFile, Sysctls: sys, RecordFile: record, Handle: h, Tables: NFT{}}
	for run := 1; run <= 2; run++ {
		if err := node.NS.Do(func(ns.NetNS) error { return Run(context.Background(), opts) }); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}

	out, err := node.Exec("nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "trellis") || !strings.Contains(out, "someone-else") {
		t.Errorf("tables after uninstall:\n%s", out)
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	sawTheirs := false
	for _, r := range routes {
		if r.Protocol == netlinkprog.RouteProtocol || r.Protocol == bgpRouteProtocol {
			t.Errorf("route left: %s", r)
		}
		if r.Dst != nil && r.Dst.String() == theirs.String() {
			sawTheirs = true
		}
	}
	if !sawTheirs {
		t.Error("uninstall removed a route that is not Trellis's")
	}
	if _, err := h.LinkByName(vxlan6); err == nil {
		t.Error("IPv6-underlay VXLAN device left")
	}
	if _, err := h.LinkByName(config.DefaultVXLANDevice); err == nil {
		t.Error("VXLAN device left")
	}
	if _, err := h.LinkByName(config.DefaultWireGuardDevice); err == nil {
		t.Error("WireGuard (TUN) device left")
	}
	links, err := k.Links()
	if err != nil {
		t.Fatal(err)
	}
	if att, err := k.Attached(links); err != nil || len(att) != 0 {
		t.Errorf("fast path filters left: %v, %v", att, err)
	}
	for p := range files {
		_, err := os.Stat(p)
		if keep := strings.HasSuffix(p, "20-other.conflist"); keep != (err == nil) {
			t.Errorf("%s: exists=%v, want %v", p, err == nil, keep)
		}
	}
	if v, err := sys.Get(fastpath.SysctlBeLiberal); err != nil || v != "0" {
		t.Errorf("be_liberal after uninstall = %q, %v; want the recorded 0", v, err)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Errorf("sysctl record left: %v", err)
	}
}
