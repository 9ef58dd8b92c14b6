package ctl

import (
	"fmt"
	"strconv"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// encryptionMode is the value of agentapi.Encryption.Mode when pod traffic
// between nodes is encrypted (config.EncryptionWireGuard).
const encryptionMode = "wireguard"

func encrypted(st *agentapi.Status) bool { return st != nil && st.Encryption.Mode == encryptionMode }

// showEncryption reports whether any node has encryption on: only then
// does the table get its ENCRYPTION column.
func showEncryption(rep *StatusReport) bool {
	for _, n := range rep.Nodes {
		if encrypted(n.Agent) {
			return true
		}
	}
	return false
}

// encryptionCell is "off", or the engine, this node's key id and the
// peers with a handshake of all the device's peers, e.g.
// "userspace 3f9a1c07 2/2" (", not strict" when strict mode is off).
func encryptionCell(st *agentapi.Status) string {
	switch {
	case st == nil:
		return ""
	case !encrypted(st):
		return "off"
	case st.Encryption.Error != "":
		return "error"
	}
	e := st.Encryption
	engine := e.Engine
	if engine == "" {
		engine = "starting"
	}
	cell := fmt.Sprintf("%s %s %d/%d", engine, e.KeyID, e.PeersWithHandshake, len(e.Peers))
	if !e.Strict {
		cell += ", not strict"
	}
	return cell
}

// encryptionWarnings adds what an operator of an encrypted cluster should
// look at: the device unreadable, a peer without a handshake yet, a peer
// the routing controller does not send through the tunnel (no key).
func encryptionWarnings(ns *NodeStatus) {
	st := ns.Agent
	if !encrypted(st) {
		return
	}
	warn := func(format string, a ...any) { ns.Warnings = append(ns.Warnings, fmt.Sprintf(format, a...)) }
	e := st.Encryption
	if e.Error != "" {
		warn("encryption: WireGuard device %s unreadable: %s", e.Device, e.Error)
		return
	}
	for _, p := range e.Peers {
		if p.LastHandshake == nil {
			warn("encryption: no handshake with %s (key %s) yet", peerName(p), p.KeyID)
		}
	}
	fate := "strict mode drops its traffic"
	if !e.Strict {
		fate = "its traffic goes in plaintext (strict mode off)"
	}
	for _, p := range st.Routing.Peers {
		if p.State == agentapi.PeerProgrammed && p.Mode != encryptionMode {
			warn("encryption: peer %s is reached by %s, not WireGuard (no public key published): %s", p.Node, p.Mode, fate)
		}
	}
}

func peerName(p agentapi.EncryptionPeer) string {
	if p.Node != "" {
		return "node " + p.Node
	}
	return "a peer"
}

// encryptionSummary is the summary line's encryption part ("" when no
// node encrypts).
func encryptionSummary(s StatusSummary) string {
	if s.Encrypted == 0 {
		return ""
	}
	return "; encryption on " + strconv.Itoa(s.Encrypted) + "/" + strconv.Itoa(s.Nodes) +
		", " + strconv.Itoa(s.EncryptedPeersNoHandshake) + " peer(s) without a handshake"
}
