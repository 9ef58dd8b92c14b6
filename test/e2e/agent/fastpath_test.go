//go:build e2e

package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// fastPathCounters scrapes trellis_fastpath_packets_total from the agent on
// node (its metrics endpoint, inside the node's namespace).
func fastPathCounters(t *testing.T, node string) map[string]float64 {
	t.Helper()
	_, port, _ := net.SplitHostPort(config.DefaultMetricsBindAddress)
	nsPath := framework.NetnsPath(l.NodeHost(t, node).Netns)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return topology.DialInNetns(nsPath, network, addr, 5*time.Second)
		}}}
	resp, err := client.Get("http://127.0.0.1:" + port + "/metrics")
	if err != nil {
		t.Fatalf("scrape the agent on %s: %v", node, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	const prefix = `trellis_fastpath_packets_total{result="`
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		name, val, ok := strings.Cut(line, `"} `)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("agent on %s: bad sample %q", node, sc.Text())
		}
		out[name] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("the agent on %s exports no trellis_fastpath_packets_total: is the fast path loaded? (trellis-lab logs %s trellis-agent)", node, node)
	}
	return out
}

// The eBPF fast path carries established pod traffic on real nodes: a
// pattern-checked TCP stream between pods on two nodes (across subnets
// through VXLAN in auto and vxlan mode) arrives intact, and both agents'
// counters show its packets redirected on the sending and receiving node.
func TestE2EAgentFastPathCarriesPodTraffic(t *testing.T) {
	requireAgent(t)
	na, nb := crossPair()
	pods := l.PodPerNode(t, "agent-fastpath", []string{na, nb})
	a0, b0 := fastPathCounters(t, na), fastPathCounters(t, nb)
	s := startStream(t, pods[0], pods[1])
	// 1,500 datagrams: 3 s on a quiet machine, more on a loaded one.
	s.WaitDatagrams(t, 1500, 30*time.Second)
	s.Finish(t, fmt.Sprintf("stream %s (%s) -> %s (%s)", pods[0], na, pods[1], nb))
	a1, b1 := fastPathCounters(t, na), fastPathCounters(t, nb)
	t.Logf("fast path on %s: %v", na, a1)
	t.Logf("fast path on %s: %v", nb, b1)
	for _, c := range []struct {
		node, counter string
		before, after map[string]float64
	}{
		{na, "from_pod_redirect", a0, a1}, // data leaving a's pod
		{nb, "to_pod_redirect", b0, b1},   // data entering b's pod
		{nb, "from_pod_redirect", b0, b1}, // ACKs leaving b's pod
		{na, "to_pod_redirect", a0, a1},   // ACKs entering a's pod
	} {
		if d := c.after[c.counter] - c.before[c.counter]; d < 100 {
			t.Errorf("%s: %s grew by %.0f during the stream, want the stream's packets on the fast path", c.node, c.counter, d)
		}
	}
}
