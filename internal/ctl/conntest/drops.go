package conntest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DropConfirmer confirms that a blocked connection was dropped by a
// NetworkPolicy, not lost to a timeout for another reason. Denied is a
// count that grows with the connections the policy ns/name denied in
// direction ("ingress" or "egress") on node.
type DropConfirmer interface {
	Denied(ctx context.Context, node, namespace, policy, direction string) (float64, error)
}

// AgentGetter reads an agent API path (internal/agentapi) on node.
type AgentGetter func(ctx context.Context, node, path string, w io.Writer) error

// MetricPolicyPackets is the agent's per-policy packet counter
// (internal/policy: new connections to/from the pods a policy isolates,
// by verdict), read from the agent API's /v1/metrics.
const MetricPolicyPackets = "trellis_policy_packets_total"

// AgentCounters is the DropConfirmer of a Trellis cluster: it reads the
// agents' policy deny counters through their local API. Concurrent
// scenarios share one read per node per MaxAge.
type AgentCounters struct {
	Get    AgentGetter
	MaxAge time.Duration

	mu    sync.Mutex
	nodes map[string]*nodeRead
}

type nodeRead struct {
	mu   sync.Mutex
	at   time.Time
	vals map[[4]string]float64
	err  error
}

var _ DropConfirmer = (*AgentCounters)(nil)

// Denied implements DropConfirmer.
func (a *AgentCounters) Denied(ctx context.Context, node, namespace, policy, direction string) (float64, error) {
	a.mu.Lock()
	if a.nodes == nil {
		a.nodes = map[string]*nodeRead{}
	}
	nr := a.nodes[node]
	if nr == nil {
		nr = &nodeRead{}
		a.nodes[node] = nr
	}
	a.mu.Unlock()
	nr.mu.Lock()
	defer nr.mu.Unlock()
	if nr.at.IsZero() || time.Since(nr.at) > a.MaxAge {
		var buf bytes.Buffer
		err := a.Get(ctx, node, "/v1/metrics", &buf)
		nr.at, nr.err = time.Now(), err
		if err != nil {
			nr.err = fmt.Errorf("agent on %s: %w", node, err)
		} else {
			nr.vals, nr.err = ParsePolicyPackets(&buf)
		}
	}
	if nr.err != nil {
		return 0, nr.err
	}
	return nr.vals[[4]string{namespace, policy, direction, "deny"}], nil
}

// ParsePolicyPackets reads MetricPolicyPackets out of Prometheus' text
// format, keyed by namespace, policy, direction and verdict.
func ParsePolicyPackets(r io.Reader) (map[[4]string]float64, error) {
	out := map[[4]string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, MetricPolicyPackets+"{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len(MetricPolicyPackets)+1:], "} ")
		if !ok {
			return nil, fmt.Errorf("malformed metric line %q", line)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("malformed metric line %q: %w", line, err)
		}
		l := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, val, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(val, `"`)
		}
		out[[4]string{l["namespace"], l["policy"], l["direction"], l["verdict"]}] += v
	}
	return out, sc.Err()
}
