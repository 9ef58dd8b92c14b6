package agentapi

// TracePath is the endpoint that traces one new connection through the
// node's live NetworkPolicy table (internal/policy/livetrace). Query:
// src, dst (IP addresses of one family), proto (TCP, UDP, SCTP), port, and host=1 when
// dst is this node's own host network (the packet then takes the input
// hook instead of forward). At least one of src and dst must be a pod
// interface of this node.
const TracePath = "/v1/trace"

// Trace is the answer of TracePath.
type Trace struct {
	Node string `json:"node"`
	// Hook is the netfilter hook the packet was traced through.
	Hook string `json:"hook"`
	// IIF and OIF are the interfaces it enters and leaves the node by
	// ("" or "(underlay)" when it comes from or goes to another host).
	IIF string `json:"iif,omitempty"`
	OIF string `json:"oif,omitempty"`
	// Egress / Ingress: whether the trace covers the source's egress
	// (the source is a pod of this node) and the destination's ingress.
	Egress  bool `json:"egress"`
	Ingress bool `json:"ingress"`
	// Verdict is "accept" or "drop".
	Verdict string `json:"verdict"`
}
