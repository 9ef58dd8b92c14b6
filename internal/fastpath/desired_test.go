package fastpath

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/trellisnet/trellis/internal/podlink"
)

func TestDesired(t *testing.T) {
	links := []Link{
		{Index: 1, Name: "lo"},
		{Index: 2, Name: "eth0"},
		{Index: 9, Name: "trl0123456789a", Pod: true, PodIPv4: netip.MustParseAddr("10.244.1.7")},
		{Index: 5, Name: "trlbbbbbbbbbbb", Pod: true}, // address route not there yet
		{Index: 7, Name: "trellis.vxlan"},
		{Index: 8, Name: "cni0"},
		{Index: 4, Name: "trlcccccccccc6", Pod: true, PodIPv6: netip.MustParseAddr("fd00::7")}, // IPv6 only
		{Index: 6, Name: "trldddddddddd6", Pod: true, PodIPv4: netip.MustParseAddr("10.244.1.9"),
			PodIPv6: netip.MustParseAddr("fd00::9")}, // dual-stack: one entry, both addresses
		{Index: 3, Name: "trleeeeeeeeeee", Pod: true, PodIPv6: netip.MustParseAddr("fe80::1")}, // link-local: no entry
	}
	got := Desired(links, []string{"eth0", "trellis.vxlan", "", "absent0"}, false)
	want := State{
		Ifaces: map[uint32]Iface{
			9: {Kind: KindPod, Ipv4: be32(netip.MustParseAddr("10.244.1.7")), Gen: Generation("trl0123456789a")},
			4: {Kind: KindPod, Ipv6: netip.MustParseAddr("fd00::7").As16(), Gen: Generation("trlcccccccccc6")},
			6: {Kind: KindPod, Ipv4: be32(netip.MustParseAddr("10.244.1.9")), Ipv6: netip.MustParseAddr("fd00::9").As16(),
				Gen: Generation("trldddddddddd6")},
			2: {Kind: KindUplink, Gen: Generation("eth0")},
			7: {Kind: KindUplink, Gen: Generation("trellis.vxlan")},
		},
		PodAddrs:  map[[4]byte]uint32{{10, 244, 1, 7}: 9, {10, 244, 1, 9}: 6},
		PodAddrs6: map[[16]byte]uint32{netip.MustParseAddr("fd00::7").As16(): 4, netip.MustParseAddr("fd00::9").As16(): 6},
		Attach: []Attachment{
			{Index: 2, Name: "eth0", Program: ProgToPod},
			{Index: 3, Name: "trleeeeeeeeeee", Program: ProgFromPod},
			{Index: 4, Name: "trlcccccccccc6", Program: ProgFromPod},
			{Index: 5, Name: "trlbbbbbbbbbbb", Program: ProgFromPod},
			{Index: 6, Name: "trldddddddddd6", Program: ProgFromPod},
			{Index: 7, Name: "trellis.vxlan", Program: ProgToPod},
			{Index: 9, Name: "trl0123456789a", Program: ProgFromPod},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Desired =\n%+v\nwant\n%+v", got, want)
	}
	// No uplinks (routing not synced yet): pods only.
	if got := Desired(links, nil, false); len(got.Attach) != 5 || len(got.Ifaces) != 3 {
		t.Errorf("without uplinks: %+v", got)
	}
}

// With encryption on, no uplink is an egress the programs may redirect
// to (a pod's packet to another node must reach the WireGuard device by
// the full path); the rest is as without encryption.
func TestDesiredEncryptedHasNoUplinkEgress(t *testing.T) {
	links := []Link{
		{Index: 2, Name: "eth0"},
		{Index: 7, Name: "trellis.vxlan"},
		{Index: 11, Name: "trellis.wg"},
		{Index: 9, Name: "trl0123456789a", Pod: true, PodIPv4: netip.MustParseAddr("10.244.1.7")},
		{Index: 10, Name: "trl0123456789b", Pod: true, PodIPv4: netip.MustParseAddr("10.244.1.8")},
	}
	uplinks := []string{"eth0", "trellis.vxlan"}
	plain, enc := Desired(links, uplinks, false), Desired(links, uplinks, true)
	for idx, e := range enc.Ifaces {
		if e.Kind == KindUplink {
			t.Errorf("encrypted: interface %d is an uplink egress %+v", idx, e)
		}
	}
	if len(enc.Ifaces) != 2 || enc.Ifaces[9].Kind != KindPod || enc.Ifaces[10].Kind != KindPod {
		t.Errorf("encrypted: ifaces %+v, want the two pods (same-node flows keep the fast path)", enc.Ifaces)
	}
	if !reflect.DeepEqual(enc.Attach, plain.Attach) || !reflect.DeepEqual(enc.PodAddrs, plain.PodAddrs) {
		t.Errorf("encrypted: attachments %+v / pod addresses %+v differ from the plaintext ones %+v / %+v",
			enc.Attach, enc.PodAddrs, plain.Attach, plain.PodAddrs)
	}
	if plain.Ifaces[2].Kind != KindUplink {
		t.Errorf("plaintext: eth0 is no uplink egress: %+v", plain.Ifaces)
	}
}

// Two pods' host interfaces that the kernel gave one index have different
// generations (their names come from their containers), and a generation
// depends on the name alone.
func TestGenerationByName(t *testing.T) {
	old, new := podlink.HostName("c0ffee01", "eth0"), podlink.HostName("c0ffee02", "eth0")
	if Generation(old) == Generation(new) {
		t.Errorf("interfaces %s and %s share generation %#x", old, new, Generation(old))
	}
	if Generation(old) != Generation(podlink.HostName("c0ffee01", "eth0")) {
		t.Error("one name, two generations")
	}
	d1 := Desired([]Link{{Index: 9, Name: old, Pod: true, PodIPv4: netip.MustParseAddr("10.244.1.7")}}, nil, false)
	d2 := Desired([]Link{{Index: 9, Name: new, Pod: true, PodIPv4: netip.MustParseAddr("10.244.1.7")}}, nil, false)
	if d1.Ifaces[9] == d2.Ifaces[9] {
		t.Errorf("a new pod interface at index 9 with the old one's address keeps its entry %+v", d1.Ifaces[9])
	}
}

// The Stat names are the Prometheus label values and the docs' vocabulary;
// every counter the program keeps has one.
func TestStatNames(t *testing.T) {
	seen := map[string]bool{}
	for s := Stat(0); s < numStats; s++ {
		n := s.String()
		if seen[n] || n == "" || n[:5] == "stat_" {
			t.Errorf("counter %d has name %q", s, n)
		}
		seen[n] = true
	}
}

// The embedded object carries both programs and every map the Go side uses.
func TestObjectContents(t *testing.T) {
	spec, err := loadFastpath()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Assign(&fastpathSpecs{}); err != nil {
		t.Errorf("object does not match the generated Go side: %v", err)
	}
	for _, p := range []string{ProgFromPod, ProgToPod} {
		if spec.Programs[p] == nil {
			t.Errorf("object lacks program %s", p)
		}
	}
	for _, m := range []string{"ifaces", "pod_addrs", "pod_addrs6", "flows", "flows6", "config", "stats"} {
		if spec.Maps[m] == nil {
			t.Errorf("object lacks map %s", m)
		}
	}
	// One counter per Stat and family (IPv6 at numStats + the Stat).
	if got := spec.Maps["stats"].MaxEntries; got != 2*uint32(numStats) {
		t.Errorf("stats map has %d entries, the Go side knows %d counters per family", got, numStats)
	}
}
