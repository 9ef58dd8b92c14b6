//go:build e2e

package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	labnode "github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// nodeLeftovers lists what Trellis left on node: nftables tables named
// trellis*, routes with Trellis's protocol number, VXLAN devices, tc BPF
// filters on any interface, the conflist and the plugin binary.
func nodeLeftovers(t *testing.T, node string) []string {
	t.Helper()
	h, err := l.State.Topology.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	out, err := exec.Command("ip", "netns", "exec", h.Netns, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: nft list tables: %v: %s", node, err, out)
	}
	for _, ln := range strings.Split(string(out), "\n") {
		if f := strings.Fields(ln); len(f) == 3 && strings.HasPrefix(f[2], "trellis") {
			left = append(left, "nftables table "+f[1]+" "+f[2])
		}
	}
	nh := framework.NetlinkAt(t, framework.NetnsPath(h.Netns))
	routes, err := nh.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: netlinkprog.RouteProtocol, Table: unix.RT_TABLE_UNSPEC},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		left = append(left, "route "+r.String())
	}
	links, err := nh.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range links {
		if ln.Type() == "vxlan" {
			left = append(left, "VXLAN device "+ln.Attrs().Name)
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := nh.FilterList(ln, parent)
			if err != nil {
				continue
			}
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok {
					left = append(left, "tc bpf filter "+bf.Name+" on "+ln.Attrs().Name)
				}
			}
		}
	}
	spec, err := labnode.LoadSpec(filepath.Join(l.Paths.Node(node), "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	confs, _ := filepath.Glob(filepath.Join(spec.HostPath("/etc/cni/net.d"), "*"))
	for _, c := range confs {
		if strings.Contains(filepath.Base(c), "trellis") {
			left = append(left, "conflist "+filepath.Base(c))
		}
	}
	if _, err := os.Stat(spec.HostPath("/opt/cni/bin/trellis-cni")); err == nil {
		left = append(left, "plugin /opt/cni/bin/trellis-cni")
	}
	return left
}

// Uninstall (last: it removes Trellis from the lab): delete the shipped
// objects, run the uninstall DaemonSet, then every node holds nothing of
// Trellis, and pods created before keep their addresses.
func TestE2EInstallUninstallLeavesNothing(t *testing.T) {
	requireDaemonSet(t)
	nodes := l.Nodes()
	_, pods := createPods(t, "uninstall", nil, nodes)
	addrs := map[string]string{}
	for _, p := range pods {
		addrs[p] = l.Pod(t, p).Status.PodIP
	}
	before := 0
	for _, n := range nodes {
		before += len(nodeLeftovers(t, n))
	}
	if before == 0 {
		t.Fatal("the check finds nothing of Trellis on the nodes before the uninstall: it would prove nothing")
	}
	// The uninstall manifest shipped next to the applied one.
	labCmd(t, "uninstall", "--manifest", filepath.Join(filepath.Dir(l.State.Install.Manifest), "uninstall.yaml"))
	total := 0
	for _, n := range nodes {
		left := nodeLeftovers(t, n)
		total += len(left)
		if len(left) > 0 {
			t.Errorf("%s after uninstall still holds:\n  %s", n, strings.Join(left, "\n  "))
		}
	}
	t.Logf("uninstall: %d Trellis objects on %d nodes before, %d left after", before, len(nodes), total)
	for _, p := range pods {
		got := l.Pod(t, p)
		if got.Status.PodIP != addrs[p] {
			t.Errorf("pod %s had %s before the uninstall, now %q", p, addrs[p], got.Status.PodIP)
		}
		ok := false
		as, _ := framework.NetlinkAt(t, l.PodNetns(t, p)).AddrList(nil, netlink.FAMILY_V4)
		for _, a := range as {
			ok = ok || a.IP.String() == addrs[p]
		}
		if !ok {
			t.Errorf("pod %s lost its address %s in its network namespace", p, addrs[p])
		}
	}
}
