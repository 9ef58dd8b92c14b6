package masq

import (
	"context"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestCollapse(t *testing.T) {
	got := Collapse(pfx("10.244.1.0/24", "10.244.0.0/16", "192.168.1.7/24", "192.168.1.0/24", "fd00::/64", "10.244.2.0/24"))
	want := pfx("10.244.0.0/16", "192.168.1.0/24")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Collapse = %v, want %v", got, want)
	}
}

func TestComputeUsesAllExemptSources(t *testing.T) {
	d := Compute(pfx("10.244.1.0/24"), pfx("10.244.0.0/16"), pfx("10.244.1.0/24", "10.250.3.0/24"), pfx("172.16.0.0/12"))
	if !reflect.DeepEqual(d.PodSources, pfx("10.244.1.0/24")) {
		t.Errorf("sources %v", d.PodSources)
	}
	if !reflect.DeepEqual(d.NoMasquerade, pfx("10.244.0.0/16", "10.250.3.0/24", "172.16.0.0/12")) {
		t.Errorf("exempt %v", d.NoMasquerade)
	}
}

func elements(t *testing.T, nft *knftables.Fake, set string) []string {
	t.Helper()
	els, err := nft.ListElements(context.Background(), "set", set)
	if err != nil {
		t.Fatalf("list %s: %v", set, err)
	}
	var out []string
	for _, e := range els {
		out = append(out, strings.Join(e.Key, ","))
	}
	sort.Strings(out)
	return out
}

func TestApplyProgramsAndConverges(t *testing.T) {
	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	ctx := context.Background()
	d1 := Compute(pfx("10.244.1.0/24"), nil, pfx("10.244.1.0/24", "10.244.2.0/24"), pfx("192.168.0.0/16"))
	if err := Apply(ctx, nft, d1); err != nil {
		t.Fatal(err)
	}
	dump1 := nft.Dump()
	for _, want := range []string{"type nat hook postrouting priority 100", "ip saddr @pod-sources ip daddr != @no-masquerade-dst fib daddr type != local counter masquerade"} {
		if !strings.Contains(dump1, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, dump1)
		}
	}
	if got := elements(t, nft, SetNoMasqDst); !reflect.DeepEqual(got, []string{"10.244.1.0/24", "10.244.2.0/24", "192.168.0.0/16"}) {
		t.Errorf("exempt set = %v", got)
	}
	if err := Apply(ctx, nft, d1); err != nil {
		t.Fatal(err)
	}
	if nft.Dump() != dump1 {
		t.Errorf("second identical Apply changed the ruleset:\n%s\nvs\n%s", dump1, nft.Dump())
	}
	rules, _ := nft.ListRules(ctx, ChainName)
	if len(rules) != 1 {
		t.Errorf("%d rules after two applies, want 1", len(rules))
	}
	// Node 2 removed: its pod CIDR leaves the exempt set.
	d2 := Compute(pfx("10.244.1.0/24"), nil, pfx("10.244.1.0/24"), nil)
	if err := Apply(ctx, nft, d2); err != nil {
		t.Fatal(err)
	}
	if got := elements(t, nft, SetNoMasqDst); !reflect.DeepEqual(got, []string{"10.244.1.0/24"}) {
		t.Errorf("exempt set after removal = %v", got)
	}
	if err := Remove(ctx, nft); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(nft.Dump(), TableName) {
		t.Errorf("table still present after Remove:\n%s", nft.Dump())
	}
	if err := Remove(ctx, nft); err != nil {
		t.Errorf("Remove of an absent table: %v", err)
	}
}
