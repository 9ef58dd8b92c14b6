package tor

import (
	"net/netip"
	"testing"
)

// Output of BIRD 2.0.12 in the lab's layout (timeformat protocol iso long).
const showRoute = `BIRD 2.0.12 ready.
Table master4:
172.30.251.0/24      unicast [origin 13:50:18.037] * (200)
	via 172.30.250.2 on external
10.244.1.0/24        unicast [subnet1_1 13:50:22.766] * (100) [AS64512i]
	via 172.30.1.10 on sub1
                     unicast [subnet1_2 13:50:25.001] (100) [AS64512i]
	via 172.30.1.11 on sub1
172.30.252.10/32     unicast [subnet2_1 13:51:02.000] * (100) [AS64512i]
	via 172.30.2.10 on sub2
	via 172.30.2.11 on sub2
`

func TestParseRoutes(t *testing.T) {
	rs := ParseRoutes(showRoute)
	if len(rs) != 4 {
		t.Fatalf("parsed %d routes, want 4: %+v", len(rs), rs)
	}
	best := BestNextHops(rs)
	pod := netip.MustParsePrefix("10.244.1.0/24")
	if got := best[pod]; len(got) != 1 || got[0] != netip.MustParseAddr("172.30.1.10") {
		t.Errorf("best next hops of %s: %v", pod, got)
	}
	if rs[2].Best || rs[2].Protocol != "subnet1_2" || rs[2].Prefix != pod {
		t.Errorf("the second route of %s: %+v", pod, rs[2])
	}
	if got := best[netip.MustParsePrefix("172.30.252.10/32")]; len(got) != 2 {
		t.Errorf("ECMP next hops: %v", got)
	}
	if got := rs[0].Protocol; got != "origin" {
		t.Errorf("origin route from %q", got)
	}
}

const showProtocols = `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2026-12-02 13:50:18  
origin     Static     master4    up     2026-12-02 13:50:18  
subnet1    BGP        ---        start  2026-12-02 13:50:18  Passive       
subnet1_md5 BGP        ---        start  2026-12-02 13:50:38  Passive       
subnet1_1  BGP        ---        up     2026-12-02 13:50:22  Established   
subnet1_md5_1 BGP        ---        start  2026-12-02 13:51:00  Active        Error: BFD session down
`

func TestParseProtocols(t *testing.T) {
	ps := ParseProtocols(showProtocols)
	if len(ps) != 6 {
		t.Fatalf("parsed %d protocols: %+v", len(ps), ps)
	}
	s := NodeSessions(ps)
	if len(s) != 2 {
		t.Fatalf("node sessions %v, want subnet1_1 and subnet1_md5_1", s)
	}
	if got := s["subnet1_1"]; got.Info != "Established" || got.State != "up" {
		t.Errorf("subnet1_1: %+v", got)
	}
	if got := s["subnet1_md5_1"].Info; got != "Active Error: BFD session down" {
		t.Errorf("subnet1_md5_1 info %q", got)
	}
}
