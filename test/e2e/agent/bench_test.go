//go:build e2e

package agent

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/dpbench"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// TestBenchDataplaneLab is the lab half of the dataplane benchmark (not
// part of `make test-e2e`; run by `make bench-dataplane-lab`): iperf3 and
// 1-byte TCP request/response between pods on different lab nodes vs the
// same between the node namespaces, and VXLAN pod traffic vs a hand-built
// kernel VXLAN between the same two nodes. Needs routing mode auto.
func TestBenchDataplaneLab(t *testing.T) {
	requireAgent(t)
	if mode() != "auto" {
		t.Fatalf("the lab benchmark needs routing mode auto (native and VXLAN paths side by side), lab runs %s", mode())
	}
	runs, secs := 3, 4
	if v, err := strconv.Atoi(os.Getenv("BENCH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	nodes := l.Nodes()
	n1, n2, n3 := l.NodeHost(t, nodes[0]), l.NodeHost(t, nodes[1]), l.NodeHost(t, nodes[2]) // n1, n3 share a subnet
	pods := l.PodPerNode(t, "agent-bench", []string{nodes[0], nodes[2], nodes[1]})
	p1, p3, p2 := dpbench.Netns(podNetns(t, pods[0])), dpbench.Netns(podNetns(t, pods[1])), dpbench.Netns(podNetns(t, pods[2]))
	ip3, ip2 := getPod(t, pods[1]).Status.PodIP, getPod(t, pods[2]).Status.PodIP
	ns1, ns2, ns3 := dpbench.Netns(framework.NetnsPath(n1.Netns)), dpbench.Netns(framework.NetnsPath(n2.Netns)), dpbench.Netns(framework.NetnsPath(n3.Netns))

	// Hand-built VXLAN between node1 and node2 (across the router).
	for i, h := range [][2]string{{n1.Netns, n2.Addr.String()}, {n2.Netns, n1.Addr.String()}} {
		local := []string{n1.Addr.String(), n2.Addr.String()}[i]
		for _, c := range [][]string{
			{"ip", "-n", h[0], "link", "add", "hvx0", "type", "vxlan", "id", "77", "dstport", "4790", "local", local, "remote", h[1], "dev", "eth0"},
			{"ip", "-n", h[0], "link", "set", "hvx0", "mtu", "1450", "up"},
			{"ip", "-n", h[0], "addr", "add", fmt.Sprintf("10.93.0.%d/24", i+1), "dev", "hvx0"},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", strings.Join(c, " "), err, out)
			}
		}
		netnsName := h[0]
		t.Cleanup(func() { _ = exec.Command("ip", "-n", netnsName, "link", "del", "hvx0").Run() })
	}
	var rows []dpbench.Row
	add := func(name string, target float64, base, subj func() (float64, error)) {
		r, err := dpbench.Compare(name, target, runs, t.Logf, base, subj)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	add("native pod->pod ÷ node->node (same subnet), Gbit/s", 0.95,
		func() (float64, error) { return dpbench.Iperf(ns1, ns3, n3.Addr.String(), secs) },
		func() (float64, error) { return dpbench.Iperf(p1, p3, ip3, secs) })
	add("vxlan pod->pod ÷ hand-built VXLAN node->node, Gbit/s", 0.95,
		func() (float64, error) { return dpbench.Iperf(ns1, ns2, "10.93.0.2", secs) },
		func() (float64, error) { return dpbench.Iperf(p1, p2, ip2, secs) })
	add("TCP 1-byte request/response pod ÷ node (same subnet), /s", 0.90,
		func() (float64, error) { return dpbench.RR(ns1, ns3, n3.Addr.String(), secs) },
		func() (float64, error) { return dpbench.RR(p1, p3, ip3, secs) })
	var sb strings.Builder
	dpbench.Report(&sb, rows)
	t.Logf("lab dataplane benchmark, %d runs x %d s:\n%s", runs, secs, sb.String())
}
