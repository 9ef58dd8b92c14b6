package agentapi

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// DropsPath is the agent API path of the deny log: one Drop per line.
const DropsPath = "/v1/drops"

// Drop is one packet the node's policy table dropped, as the agent read it
// from its deny log (nflog) and paired with pods.
type Drop struct {
	Time time.Time `json:"time"`
	Node string    `json:"node"`
	// Src and Dst are the packet's ends; Pod is "namespace/name" when the
	// address (or, for the local end, the interface) belongs to a pod.
	Src Endpoint `json:"src"`
	Dst Endpoint `json:"dst"`
	// Protocol is TCP, UDP, SCTP, ICMP or the IP protocol number.
	Protocol string `json:"protocol"`
	// Direction is ingress or egress: the direction of Pod's isolation that
	// dropped the packet ("" for a spoofed packet).
	Direction string `json:"direction,omitempty"`
	// Verdict says why it was dropped: "policy" (Pod is isolated in
	// Direction and no rule of Group admits the packet), "spoofed" (the
	// source address is not the sending pod's), "pending" (Pod's interface
	// is not programmed yet and its namespace may be isolated), "pending
	// known-address" (a pod address seen on an unprogrammed interface) or
	// "unencrypted" (encryption's strict mode: a packet to another node's
	// pod that would have left by another device than the WireGuard one).
	Verdict string `json:"verdict"`
	// Pod is the local pod whose isolation (or address check) dropped the
	// packet: the destination for ingress, the source for egress.
	Pod string `json:"pod,omitempty"`
	// Interface is Pod's host-side interface.
	Interface string `json:"interface,omitempty"`
	// Group is the policy group chain (ing-…/eg-…, `nft list chain inet
	// trellis-policy GROUP`), Policies the NetworkPolicies ("ns/name")
	// selecting Pod in Direction when the drop was read.
	Group    string   `json:"group,omitempty"`
	Policies []string `json:"policies,omitempty"`
}

// Endpoint is one end of a dropped packet.
type Endpoint struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port,omitempty"`
	Pod  string `json:"pod,omitempty"`
}

// DropsQuery selects drops: since a time, of a namespace and/or pod (either
// end), and whether to keep streaming new ones.
type DropsQuery struct {
	// Since, when not zero, leaves out drops before it; SinceAgo, when
	// Since is zero, does the same for drops older than this duration by
	// the agent's clock.
	Since    time.Time
	SinceAgo time.Duration
	// Follow keeps the answer open, streaming drops as they are read.
	Follow bool
	// Namespace and Pod (a name, with Namespace; or "ns/name") match
	// either end of the packet.
	Namespace string
	Pod       string
}

// Path is the API path (with query) asking for q.
func (q DropsQuery) Path() string {
	v := url.Values{}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	} else if q.SinceAgo > 0 {
		v.Set("since", q.SinceAgo.String())
	}
	if q.Follow {
		v.Set("follow", "1")
	}
	if q.Namespace != "" {
		v.Set("namespace", q.Namespace)
	}
	if q.Pod != "" {
		v.Set("pod", q.Pod)
	}
	if len(v) == 0 {
		return DropsPath
	}
	return DropsPath + "?" + v.Encode()
}

// ParseDropsQuery reads the query of a /v1/drops request. since is an
// RFC 3339 time or a duration back from now.
func ParseDropsQuery(v url.Values, now time.Time) (DropsQuery, error) {
	var q DropsQuery
	if s := v.Get("since"); s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			q.Since = t
		} else if d, err := time.ParseDuration(s); err == nil && d >= 0 {
			q.Since = now.Add(-d)
		} else {
			return q, fmt.Errorf("since=%q is neither an RFC 3339 time nor a non-negative duration", s)
		}
	}
	switch f := v.Get("follow"); f {
	case "", "0", "false":
	case "1", "true":
		q.Follow = true
	default:
		return q, fmt.Errorf("follow=%q: want 1 or 0", f)
	}
	q.Namespace, q.Pod = v.Get("namespace"), v.Get("pod")
	if ns, name, ok := strings.Cut(q.Pod, "/"); ok {
		if q.Namespace != "" && q.Namespace != ns {
			return q, fmt.Errorf("pod=%q is not in namespace=%q", q.Pod, q.Namespace)
		}
		q.Namespace, q.Pod = ns, name
	}
	return q, nil
}

// Match reports whether d is one of the drops q selects (Follow aside).
func (q DropsQuery) Match(d *Drop) bool {
	if !q.Since.IsZero() && d.Time.Before(q.Since) {
		return false
	}
	if q.Namespace == "" && q.Pod == "" {
		return true
	}
	return q.matchPod(d.Src.Pod) || q.matchPod(d.Dst.Pod)
}

func (q DropsQuery) matchPod(p string) bool {
	ns, name, ok := strings.Cut(p, "/")
	if !ok {
		return false
	}
	return (q.Namespace == "" || q.Namespace == ns) && (q.Pod == "" || q.Pod == name)
}
