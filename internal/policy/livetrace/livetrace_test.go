package livetrace

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/podlink"
)

type ifaces []podlink.Interface

func (i ifaces) PodInterfaces() ([]podlink.Interface, error) { return i, nil }

// listing is a small policy table as `nft list table` prints it: pod a
// (trla, 10.244.1.2 and fd00:244:1::2) may receive only TCP/80 from pod b
// (10.244.1.3 and fd00:244:1::3).
const listing = `table inet trellis-policy {
	comment "Trellis NetworkPolicy (managed by trellis-agent)"
	counter ing-1-allow {
		packets 3 bytes 180
	}
	set pod-ifaces {
		type ifname . ipv4_addr
		elements = { "trla" . 10.244.1.2,
			     "trlb" . 10.244.1.3 }
	}
	set ing-1-ports {
		type ipv4_addr . inet_proto . inet_service
		flags interval
		elements = { 10.244.1.3 . tcp . 80 }
	}
	set ing-1-ports6 {
		type ipv6_addr . inet_proto . inet_service
		flags interval
		elements = { fd00:244:1::3 . tcp . 80 }
	}
	map ingress-pods {
		type ifname : verdict
		elements = { "trla" : goto ing-1 }
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		icmpv6 type { packet-too-big, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept
		ct state established,related accept
		oifname "trl*" jump pod-ingress
	}
	chain pod-ingress {
		oifname vmap @ingress-pods
	}
	chain ing-1 {
		ip saddr . meta l4proto . th dport @ing-1-ports counter name "ing-1-allow" return
		ip6 saddr . meta l4proto . th dport @ing-1-ports6 counter name "ing-1-allow" return
		counter packets 0 bytes 0 drop
	}
}
`

func TestHandlerTracesTheListedTable(t *testing.T) {
	cfg := Config{NodeName: "n1",
		Interfaces: ifaces{
			{Name: "trla", Group: 7, Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("fd00:244:1::2")}},
			{Name: "trlb", Group: 7, Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.3"), netip.MustParseAddr("fd00:244:1::3")}},
		},
		List: func(context.Context) (string, error) { return listing, nil }}
	h := Handler(cfg)
	for _, tc := range []struct {
		query, verdict string
		egress         bool
	}{
		{"src=10.244.1.3&dst=10.244.1.2&proto=TCP&port=80", "accept", true},
		{"src=10.244.1.3&dst=10.244.1.2&proto=tcp&port=81", "drop", true},
		{"src=10.244.1.3&dst=10.244.1.2&proto=UDP&port=80", "drop", true},
		{"src=192.0.2.1&dst=10.244.1.2&proto=TCP&port=80", "drop", false},
		{"src=10.244.1.2&dst=10.244.1.3&proto=TCP&port=80", "accept", true},
		{"src=fd00:244:1::3&dst=fd00:244:1::2&proto=TCP&port=80", "accept", true},
		{"src=fd00:244:1::3&dst=fd00:244:1::2&proto=TCP&port=81", "drop", true},
		{"src=2001:db8::1&dst=fd00:244:1::2&proto=TCP&port=80", "drop", false},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", agentapi.TracePath+"?"+tc.query, nil))
		var got agentapi.Trace
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != 200 {
			t.Fatalf("%s: %d %s", tc.query, rec.Code, rec.Body)
		}
		if got.Verdict != tc.verdict || got.Egress != tc.egress || !got.Ingress || got.Node != "n1" || got.Hook != "forward" {
			t.Errorf("%s: %+v, want verdict %s egress %v ingress true", tc.query, got, tc.verdict, tc.egress)
		}
	}
	for _, q := range []string{"src=192.0.2.1&dst=192.0.2.2&proto=TCP&port=80", "src=x&dst=10.244.1.2&proto=TCP&port=80",
		"src=10.244.1.3&dst=10.244.1.2&proto=ICMP&port=80", "src=fd00:244:1::3&dst=10.244.1.2&proto=TCP&port=80"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", agentapi.TracePath+"?"+q, nil))
		if rec.Code == 200 {
			t.Errorf("%s: answered 200 %s, want an error", q, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	Handler(Config{NodeName: "n1", Interfaces: cfg.Interfaces}).ServeHTTP(rec,
		httptest.NewRequest("GET", agentapi.TracePath+"?src=10.244.1.3&dst=10.244.1.2&proto=TCP&port=80", nil))
	if rec.Code == 200 || !strings.Contains(rec.Body.String(), "enforcement is off") {
		t.Errorf("without enforcement: %d %s", rec.Code, rec.Body)
	}
}

func TestFromListingRefusesWhatItDoesNotKnow(t *testing.T) {
	cfg := Config{NodeName: "n1", Interfaces: ifaces{{Name: "trla", Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.2")}}},
		List: func(context.Context) (string, error) {
			return strings.Replace(listing, "counter ing-1-allow {", "quota q {", 1), nil
		}}
	rec := httptest.NewRecorder()
	Handler(cfg).ServeHTTP(rec, httptest.NewRequest("GET", agentapi.TracePath+"?src=10.244.1.3&dst=10.244.1.2&proto=TCP&port=80", nil))
	if rec.Code == 200 || !strings.Contains(rec.Body.String(), "unknown table member") {
		t.Errorf("a listing with an unknown object: %d %s", rec.Code, rec.Body)
	}
}
