package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/policy"
)

// VerifyResult is one agent's trace of the connection through its node's
// live table, against what the compiled model expects there.
type VerifyResult struct {
	Node string `json:"node"`
	// Covers says which decisions the trace on this node includes:
	// "egress", "ingress" or "egress+ingress" (both ends on the node).
	Covers string `json:"covers"`
	// Expected is the compiled model's verdict for what the trace covers.
	Expected string         `json:"expected"`
	Trace    agentapi.Trace `json:"trace"`
	Agree    bool           `json:"agree"`
}

// Summary is the one-line human form.
func (v VerifyResult) Summary() string {
	s := fmt.Sprintf("live ruleset %s (hook %s, in %s, out %s), compiled model %s", v.Trace.Verdict, v.Trace.Hook,
		orDash(v.Trace.IIF), orDash(v.Trace.OIF), v.Expected)
	if v.Agree {
		return s + ": agree"
	}
	return s + ": DISAGREE"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// traceRequest is one question to one node's agent.
type traceRequest struct {
	node            string
	egress, ingress bool
	dstIsHostOfNode bool
	src, dst        string
	proto           string
	port            uint16
}

// traceRequests lists the nodes that police the connection: the source's
// node for its egress, the destination's node for its ingress (one trace
// when both ends are on the same node).
func traceRequests(r *ExplainResult, src, dst policy.Endpoint) []traceRequest {
	base := traceRequest{src: src.Addr.String(), dst: dst.Addr.String(), proto: r.Protocol, port: r.Port}
	var out []traceRequest
	srcPod := src.Pod != nil && !src.Pod.HostNetwork
	dstPod := dst.Pod != nil && !dst.Pod.HostNetwork
	sameNode := src.Pod != nil && dst.Pod != nil && src.Pod.NodeName == dst.Pod.NodeName
	if srcPod {
		q := base
		q.node, q.egress = src.Pod.NodeName, true
		q.dstIsHostOfNode = dst.Pod != nil && dst.Pod.HostNetwork && sameNode
		q.ingress = dstPod && sameNode
		out = append(out, q)
	}
	if dstPod && !sameNode {
		q := base
		q.node, q.ingress = dst.Pod.NodeName, true
		out = append(out, q)
	}
	return out
}

func (o *Options) verifyExplain(ctx context.Context, r *ExplainResult, src, dst policy.Endpoint) ([]VerifyResult, error) {
	reqs := traceRequests(r, src, dst)
	if len(reqs) == 0 {
		return nil, nil
	}
	agents, err := o.AgentPods(ctx)
	if err != nil {
		return nil, err
	}
	var out []VerifyResult
	for _, q := range reqs {
		pod := agents[q.node]
		if pod == nil {
			return nil, fmt.Errorf("--verify: no agent pod on node %s", q.node)
		}
		v := url.Values{"src": {q.src}, "dst": {q.dst}, "proto": {q.proto}, "port": {fmt.Sprint(q.port)}}
		if q.dstIsHostOfNode {
			v.Set("host", "1")
		}
		var buf bytes.Buffer
		if err := o.AgentGet(ctx, pod, agentapi.TracePath+"?"+v.Encode(), &buf); err != nil {
			return nil, fmt.Errorf("--verify on node %s: %w", q.node, err)
		}
		var t agentapi.Trace
		if err := json.Unmarshal(buf.Bytes(), &t); err != nil {
			return nil, fmt.Errorf("--verify on node %s: reading the agent's answer: %w", q.node, err)
		}
		want := (!t.Egress || r.Egress.Allowed) && (!t.Ingress || r.Ingress.Allowed)
		if src.Pod != nil && src.Pod == dst.Pod {
			want = true // hairpin
		}
		var covers []string
		if t.Egress {
			covers = append(covers, "egress")
		}
		if t.Ingress {
			covers = append(covers, "ingress")
		}
		res := VerifyResult{Node: q.node, Covers: strings.Join(covers, "+"), Expected: verdictWord(want), Trace: t}
		res.Agree = t.Verdict == res.Expected && t.Egress == q.egress && t.Ingress == q.ingress
		out = append(out, res)
	}
	return out, nil
}

func verdictWord(allowed bool) string {
	if allowed {
		return "accept"
	}
	return "drop"
}

// disagreements lists the nodes whose live ruleset decided otherwise.
func disagreements(r *ExplainResult) []string {
	var out []string
	for _, v := range r.Verify {
		if !v.Agree {
			out = append(out, fmt.Sprintf("node %s: live ruleset %s, compiled model %s (covers %q, expected egress=%v ingress=%v)",
				v.Node, v.Trace.Verdict, v.Expected, v.Covers, v.Trace.Egress, v.Trace.Ingress))
		}
	}
	return out
}
