// Package livetrace serves the agent's /v1/trace endpoint: it reads the
// node's live NetworkPolicy table from the kernel (`nft list table`), loads
// it with nfttrace.FromListing and traces one new connection through it
// with the same tracer the policy tests use, so `trellisctl explain
// --verify` compares the compiled model with what the kernel holds.
package livetrace

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/hostfw"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/nfttrace"
)

// Underlay names the interface of a packet from or to another host; it
// matches no pod interface pattern, which is all the table asks of it.
const Underlay = "(underlay)"

// Config is what the handler reads.
type Config struct {
	NodeName string
	// Interfaces lists the node's pod interfaces (podlink.Watcher).
	Interfaces interface {
		PodInterfaces() ([]podlink.Interface, error)
	}
	// List returns the text of `nft list table inet trellis-policy`; nil
	// means NetworkPolicy enforcement is off on this node.
	List func(ctx context.Context) (string, error)
}

// NFTList runs the nft binary to list the policy table.
func NFTList(ctx context.Context) (string, error) {
	out, err := hostfw.Exec{}.Run(ctx, "list", "table", string(knftables.InetFamily), policy.TableName)
	return string(out), err
}

// Handler serves agentapi.TracePath.
func Handler(cfg Config) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg.List == nil {
			http.Error(w, "NetworkPolicy enforcement is off on node "+cfg.NodeName, http.StatusConflict)
			return
		}
		q, err := parseQuery(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := trace(r.Context(), cfg, q)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		agentapi.WriteJSON(w, res)
	})
}

type query struct {
	src, dst netip.Addr
	proto    uint8
	port     uint16
	host     bool
}

var protoNumbers = map[string]uint8{"TCP": 6, "UDP": 17, "SCTP": 132}

func parseQuery(r *http.Request) (query, error) {
	v := r.URL.Query()
	var q query
	var err error
	if q.src, err = netip.ParseAddr(v.Get("src")); err != nil {
		return q, fmt.Errorf("src %q: want an IP address", v.Get("src"))
	}
	if q.dst, err = netip.ParseAddr(v.Get("dst")); err != nil {
		return q, fmt.Errorf("dst %q: want an IP address", v.Get("dst"))
	}
	q.src, q.dst = q.src.Unmap(), q.dst.Unmap()
	if q.src.Is4() != q.dst.Is4() {
		return q, fmt.Errorf("src %s and dst %s: want addresses of one family", q.src, q.dst)
	}
	var ok bool
	if q.proto, ok = protoNumbers[strings.ToUpper(v.Get("proto"))]; !ok {
		return q, fmt.Errorf("proto %q: want TCP, UDP or SCTP", v.Get("proto"))
	}
	n, err := strconv.ParseUint(v.Get("port"), 10, 16)
	if err != nil {
		return q, fmt.Errorf("port %q: want 0-65535", v.Get("port"))
	}
	q.port, q.host = uint16(n), v.Get("host") == "1"
	return q, nil
}

// Packet builds the packet the node's netfilter sees for a new connection
// src→dst, from the node's pod interfaces: a local source enters by its
// interface (and its /32 route leads back there), a local destination
// leaves by its own; any other end is the underlay.
func Packet(ifaces []podlink.Interface, src, dst netip.Addr, proto uint8, port uint16, dstIsHost bool) (nfttrace.Packet, agentapi.Trace, error) {
	pkt := nfttrace.Packet{Src: src, Dst: dst, Proto: proto, DPort: port, CTState: "new",
		Hook: "forward", IIF: Underlay, OIF: Underlay, SrcRoute: Underlay}
	srcIf, dstIf := find(ifaces, src), find(ifaces, dst)
	if srcIf == nil && (dstIf == nil || dstIsHost) {
		return pkt, agentapi.Trace{}, fmt.Errorf("neither %s nor %s is a pod of this node", src, dst)
	}
	var t agentapi.Trace
	if srcIf != nil {
		pkt.IIF, pkt.SrcRoute, pkt.IIFGroup, t.Egress = srcIf.Name, srcIf.Name, srcIf.Group, true
	}
	switch {
	case dstIsHost:
		pkt.Hook, pkt.OIF = "input", ""
	case dstIf != nil:
		pkt.OIF, pkt.OIFGroup, t.Ingress = dstIf.Name, dstIf.Group, true
	}
	if srcIf == nil && dstIf != nil && !dstIsHost {
		t.Ingress = true
	}
	t.Hook, t.IIF, t.OIF = pkt.Hook, pkt.IIF, pkt.OIF
	return pkt, t, nil
}

func find(ifaces []podlink.Interface, a netip.Addr) *podlink.Interface {
	for i := range ifaces {
		for _, x := range ifaces[i].Addrs {
			if x == a {
				return &ifaces[i]
			}
		}
	}
	return nil
}

func trace(ctx context.Context, cfg Config, q query) (agentapi.Trace, error) {
	ifaces, err := cfg.Interfaces.PodInterfaces()
	if err != nil {
		return agentapi.Trace{}, fmt.Errorf("list pod interfaces: %w", err)
	}
	pkt, res, err := Packet(ifaces, q.src, q.dst, q.proto, q.port, q.host)
	if err != nil {
		return res, err
	}
	listing, err := cfg.List(ctx)
	if err != nil {
		return res, fmt.Errorf("read the policy table: %w", err)
	}
	fake, err := nfttrace.FromListing(knftables.InetFamily, policy.TableName, listing)
	if err != nil {
		return res, err
	}
	v, err := nfttrace.Trace(fake, pkt)
	if err != nil {
		return res, fmt.Errorf("trace: %w", err)
	}
	res.Node, res.Verdict = cfg.NodeName, string(v)
	return res, nil
}

// ListIf is NFTList when enforcement is on, nil otherwise.
func ListIf(enforcing bool) func(context.Context) (string, error) {
	if !enforcing {
		return nil
	}
	return NFTList
}
