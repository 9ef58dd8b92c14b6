package dpbench

import "testing"

func TestCountersParse(t *testing.T) {
	c := Counters{}
	err := c.parseMIB([]byte(`Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 415392
Tcp: RtoAlgorithm RtoMin MaxConn ActiveOpens RetransSegs
Tcp: 1 200 -1 14275 2
TcpExt: SyncookiesSent TW ListenOverflows TCPSynRetrans
TcpExt: 0 57271 3 4
sockets: used 17
TCP: inuse 1 orphan 0 tw 14274 alloc 1 mem 0
UDPLITE: inuse 0
`))
	if err != nil {
		t.Fatal(err)
	}
	c.parseConntrackStats([]byte("cpu=0 found=1 invalid=2 drop=0\ncpu=1 found=3 invalid=0 drop=5\n"))
	want := Counters{"Ip:Forwarding": 2, "Ip:DefaultTTL": 64, "Ip:InReceives": 415392, "Tcp:RtoAlgorithm": 1, "Tcp:RtoMin": 200,
		"Tcp:MaxConn": -1, "Tcp:ActiveOpens": 14275, "Tcp:RetransSegs": 2, "TcpExt:SyncookiesSent": 0, "TcpExt:TW": 57271,
		"TcpExt:ListenOverflows": 3, "TcpExt:TCPSynRetrans": 4, "sockets:used": 17, "TCP:inuse": 1, "TCP:orphan": 0,
		"TCP:tw": 14274, "TCP:alloc": 1, "TCP:mem": 0, "UDPLITE:inuse": 0,
		"conntrack:found": 4, "conntrack:invalid": 2, "conntrack:drop": 5}
	if len(c) != len(want) {
		t.Errorf("parsed %d counters, want %d: %v", len(c), len(want), c)
	}
	for k, v := range want {
		if got, ok := c[k]; !ok || got != v {
			t.Errorf("%s = %d (present %v), want %d", k, got, ok, v)
		}
	}
	d := c.Sub(Counters{"TCP:tw": 14000, "Tcp:RetransSegs": 2})
	if got := d.Show("TCP:tw", "Tcp:RetransSegs", "nope"); got != "TCP:tw=274 Tcp:RetransSegs=0 nope=?" {
		t.Errorf("Show = %q", got)
	}
}

func TestCountersRejectsMisalignedMIB(t *testing.T) {
	if err := (Counters{}).parseMIB([]byte("Tcp: A B C\nTcp: 1 2\n")); err == nil {
		t.Error("values shorter than their names parsed without error")
	}
}

func TestConnRateSummary(t *testing.T) {
	r := ConnRate{Connections: 3000, Elapsed: 1500e6, PerSecond: []int{2100, 900}}
	if r.Rate() != 2000 || r.SlowestSecond() != 900 {
		t.Errorf("rate %.1f slowest %d, want 2000 and 900", r.Rate(), r.SlowestSecond())
	}
	if _, err := ConnRateLoop("/nonexistent", "127.0.0.1:1", ConnRateOptions{}); err == nil {
		t.Error("a loop with neither duration nor count ran")
	}
}
