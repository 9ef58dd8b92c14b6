//go:build e2e && dualstack

package dualstack

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// Every pod gets one address per family of the cluster, primary family
// first (status.podIP is the primary one), each in its node's pod CIDR of
// that family.
func TestE2EDualStackPodAddresses(t *testing.T) {
	tp := requireAgent(t)
	fams := tp.ClusterFamilies()
	pods := lab.PodPerNode(t, "ds-addr", lab.Nodes())
	for _, ref := range pods {
		p := lab.Pod(t, ref)
		node, err := lab.CS.CoreV1().Nodes().Get(context.Background(), p.Spec.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Status.PodIPs) != len(fams) {
			t.Errorf("%s on %s: podIPs %v, want one per family %v", ref, p.Spec.NodeName, p.Status.PodIPs, tp.Options.IPFamily)
			continue
		}
		if p.Status.PodIP != p.Status.PodIPs[0].IP {
			t.Errorf("%s: podIP %s is not the first of podIPs %v", ref, p.Status.PodIP, p.Status.PodIPs)
		}
		for i, f := range fams {
			a, err := netip.ParseAddr(p.Status.PodIPs[i].IP)
			if err != nil || a.Is6() != f.IPv6 {
				t.Errorf("%s: podIPs[%d] %s is not %s (the cluster's family order)", ref, i, p.Status.PodIPs[i].IP, f.Name())
				continue
			}
			in := false
			for _, c := range node.Spec.PodCIDRs {
				if pfx, err := netip.ParsePrefix(c); err == nil && pfx.Contains(a) {
					in = true
				}
			}
			if !in {
				t.Errorf("%s: %s address %s is outside node %s's pod CIDRs %v", ref, f.Name(), a, node.Name, node.Spec.PodCIDRs)
			}
		}
		t.Logf("%s on %s: %v", ref, p.Spec.NodeName, p.Status.PodIPs)
	}
}

// The truth tables per family: TCP 80 and UDP 81 between every pair of
// pods, two on the first node (same node), one on each other node (same
// underlay subnet and the other one). Every pair connects, but across
// subnets in native mode; a closed port reads as not reached.
func TestE2EDualStackPodTruthTables(t *testing.T) {
	requireAgent(t)
	nodes := lab.Nodes()
	pods := lab.PodPerNode(t, "ds-tt", append([]string{nodes[0]}, nodes...))
	eachFamily(t, func(t *testing.T, f topology.ClusterFamily) {
		expected := connectivity.NewMatrix(pods, true)
		for _, a := range pods {
			for _, b := range pods {
				expected.Set(a, b, reachable(lab.NodeOf(t, a), lab.NodeOf(t, b)))
			}
		}
		lab.ExpectMatrixFamily(t, f, pods, 80, "tcp", expected)
		lab.ExpectMatrixFamily(t, f, pods, 81, "udp", expected)
		lab.ExpectMatrixFamily(t, f, pods[:2], 8081, "tcp", connectivity.NewMatrix(pods[:2], false))
	})
}

// Per family: every node reaches every pod it routes to (its own always;
// others in its mode), and every pod reaches every node at its underlay
// address of the family (a listener of the test's in the node's namespace:
// kubelet listens on the primary family only). Pod to node leaves the
// cluster's pod range, masqueraded, so every mode connects.
func TestE2EDualStackNodeAndPod(t *testing.T) {
	requireAgent(t)
	nodes := lab.Nodes()
	pods := lab.PodPerNode(t, "ds-np", nodes)
	eachFamily(t, func(t *testing.T, f topology.ClusterFamily) {
		for _, n := range nodes {
			h := lab.NodeHost(t, n)
			listen(t, framework.NetnsPath(h.Netns), netip.AddrPortFrom(framework.HostAddr(h, f), nodePort))
		}
		for _, p := range pods {
			on := lab.NodeOf(t, p)
			podAddr := lab.PodAddr(t, p, f)
			for _, n := range nodes {
				h := lab.NodeHost(t, n)
				err := probe.ProbeFromNetns(framework.NetnsPath(h.Netns), probe.Target{Addr: podAddr.String(), Port: 80, Proto: "tcp"}, 3*time.Second)
				if want := reachable(n, on); (err == nil) != want {
					t.Errorf("node %s -> pod %s (on %s) [%s]:80: %v, want reachable=%v", n, p, on, podAddr, err, want)
				}
				nodeAddr := framework.HostAddr(h, f)
				if err := probe.ProbeFromNetns(lab.PodNetns(t, p), probe.Target{Addr: nodeAddr.String(), Port: nodePort, Proto: "tcp"}, 3*time.Second); err != nil {
					t.Errorf("pod %s (on %s) -> node %s [%s]:%d: %v", p, on, n, nodeAddr, nodePort, err)
				}
			}
		}
	})
}

// nodePort is where the tests listen in a node's or the external host's
// namespace.
const nodePort = 18080

// listen opens a TCP listener at addr inside the namespace at nsPath that
// accepts and closes connections until t ends; each accepted peer address
// is sent on the returned channel if there is room.
func listen(t *testing.T, nsPath string, addr netip.AddrPort) <-chan netip.Addr {
	t.Helper()
	var ln net.Listener
	framework.InNetns(t, nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	t.Cleanup(func() { ln.Close() })
	peers := make(chan netip.Addr, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
				select {
				case peers <- ap.Addr().Unmap():
				default:
				}
			}
			c.Close()
		}
	}()
	return peers
}
