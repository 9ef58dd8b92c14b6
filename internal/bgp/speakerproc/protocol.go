// Package speakerproc runs the BGP speaker (internal/bgp/speaker, GoBGP) in
// a child process of the agent, the trellis-bgp executable, so that the
// agent itself never links GoBGP: its package initialisation, text pages
// and heap are paid only by the nodes that run BGP, and only while they do.
//
// The child (Serve) and the agent (Client) speak JSON lines over the
// child's stdin and stdout: one Request per line in, one Reply per request
// out, and unsolicited event lines whenever the speaker's Changes fires.
package speakerproc

import "github.com/trellisnet/trellis/internal/bgp"

// Ops of a Request.
const (
	OpApply   = "apply"
	OpPeers   = "peers"
	OpLearned = "learned"
	OpStop    = "stop"
)

// EventChanged is the event of a line sent whenever Speaker.Changes fired.
const EventChanged = "changed"

// Request is one line from the agent to the child.
type Request struct {
	ID uint64 `json:"id"`
	Op string `json:"op"`
	// Desired, for apply. Its passwords are redacted by bgp.Secret's
	// MarshalJSON; they travel in Passwords.
	Desired *bgp.Desired `json:"desired,omitempty"`
	// Passwords are the neighbours' TCP-MD5 keys by neighbour address.
	Passwords map[string]string `json:"passwords,omitempty"`
}

// Reply is one line from the child: the answer to the request ID, or an
// event (Event set, ID 0).
type Reply struct {
	ID      uint64             `json:"id,omitempty"`
	Event   string             `json:"event,omitempty"`
	Err     string             `json:"err,omitempty"`
	Peers   []bgp.PeerState    `json:"peers,omitempty"`
	Learned []bgp.LearnedRoute `json:"learned,omitempty"`
}

// NewApply is the apply request for d, its passwords moved into Passwords.
func NewApply(id uint64, d bgp.Desired) Request {
	var pw map[string]string
	for _, n := range d.Neighbors {
		if n.Password != "" {
			if pw == nil {
				pw = map[string]string{}
			}
			pw[n.Address.String()] = string(n.Password)
		}
	}
	return Request{ID: id, Op: OpApply, Desired: &d, Passwords: pw}
}

// RestorePasswords puts the passwords of r back into its Desired (a copy
// of the neighbours: the request's slice is not shared with the caller).
func (r Request) RestorePasswords() bgp.Desired {
	if r.Desired == nil {
		return bgp.Desired{}
	}
	d := *r.Desired
	d.Neighbors = append([]bgp.Neighbor(nil), d.Neighbors...)
	for i, n := range d.Neighbors {
		d.Neighbors[i].Password = bgp.Secret(r.Passwords[n.Address.String()])
	}
	return d
}
