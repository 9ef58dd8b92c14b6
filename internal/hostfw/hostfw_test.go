package hostfw

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// fakeNFT answers the ip chain's listing with listing, the ip6 chain's
// with listing6 (empty: no such table), and records every other command.
type fakeNFT struct {
	listing, listing6 string
	ran               []string
}

func (f *fakeNFT) Run(_ context.Context, args ...string) ([]byte, error) {
	if args[0] == "-j" {
		l := f.listing
		if args[3] == Family6 {
			l = f.listing6
		}
		if l == "" {
			return nil, fmt.Errorf("nft -j list chain %s filter FORWARD: exit status 1: Error: No such file or directory", args[3])
		}
		return []byte(l), nil
	}
	f.ran = append(f.ran, strings.Join(args, " "))
	return nil, nil
}

func listing(policy string, rules ...string) string { return listingFamily(Family, policy, rules...) }

func listingFamily(family, policy string, rules ...string) string {
	out := `{"nftables":[{"metainfo":{}},{"chain":{"family":"` + family + `","table":"filter","name":"FORWARD","handle":1,"type":"filter","hook":"forward","prio":0,"policy":"` + policy + `"}}`
	for i, c := range rules {
		out += fmt.Sprintf(`,{"rule":{"family":%q,"table":"filter","chain":"FORWARD","handle":%d,"comment":%q,"expr":[]}}`, family, 10+i, c)
	}
	return out + "]}"
}

func TestSync(t *testing.T) {
	pods := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00::/48")}
	for _, tc := range []struct {
		name              string
		listing, listing6 string
		want              []string
	}{
		{"no iptables filter table", "", "", nil},
		{"policy accept, nothing of ours", listing("accept", "docker"), listingFamily(Family6, "accept", "docker"), nil},
		{"policy drop in ip only: both accepts appended, IPv4 only", listing("drop", "docker"), "", []string{
			`add rule ip filter FORWARD ip saddr 10.244.0.0/16 counter accept comment "trellis: pod forwarding from 10.244.0.0/16"`,
			`add rule ip filter FORWARD ip daddr 10.244.0.0/16 counter accept comment "trellis: pod forwarding to 10.244.0.0/16"`}},
		{"policy drop in both: each family's accepts in its own chain", listing("drop", "docker"), listingFamily(Family6, "drop", "docker"), []string{
			`add rule ip filter FORWARD ip saddr 10.244.0.0/16 counter accept comment "trellis: pod forwarding from 10.244.0.0/16"`,
			`add rule ip filter FORWARD ip daddr 10.244.0.0/16 counter accept comment "trellis: pod forwarding to 10.244.0.0/16"`,
			`add rule ip6 filter FORWARD ip6 saddr fd00::/48 counter accept comment "trellis: pod forwarding from fd00::/48"`,
			`add rule ip6 filter FORWARD ip6 daddr fd00::/48 counter accept comment "trellis: pod forwarding to fd00::/48"`}},
		{"policy drop in ip6 only", listing("accept"), listingFamily(Family6, "drop"), []string{
			`add rule ip6 filter FORWARD ip6 saddr fd00::/48 counter accept comment "trellis: pod forwarding from fd00::/48"`,
			`add rule ip6 filter FORWARD ip6 daddr fd00::/48 counter accept comment "trellis: pod forwarding to fd00::/48"`}},
		{"policy drop, already there", listing("drop", CommentPrefix+"from 10.244.0.0/16", CommentPrefix+"to 10.244.0.0/16"),
			listingFamily(Family6, "drop", CommentPrefix+"from fd00::/48", CommentPrefix+"to fd00::/48"), nil},
		{"policy drop, a stale CIDR and a garbled rule of ours", listing("drop", CommentPrefix+"from 10.244.0.0/16",
			CommentPrefix+"to 10.244.0.0/16", CommentPrefix+"from 10.9.0.0/16", CommentPrefix+"sideways"),
			listingFamily(Family6, "drop", CommentPrefix+"from fd00::/48", CommentPrefix+"to fd00::/48", CommentPrefix+"to fd09::/48"), []string{
				"delete rule ip filter FORWARD handle 12", "delete rule ip filter FORWARD handle 13", "delete rule ip6 filter FORWARD handle 12"}},
		{"policy back to accept: ours removed, others kept", listing("accept", "docker", CommentPrefix+"from 10.244.0.0/16"),
			listingFamily(Family6, "accept", "docker", CommentPrefix+"to fd00::/48"), []string{
				"delete rule ip filter FORWARD handle 11", "delete rule ip6 filter FORWARD handle 11"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNFT{listing: tc.listing, listing6: tc.listing6}
			if _, _, _, err := Sync(context.Background(), f, pods); err != nil {
				t.Fatal(err)
			}
			slices.Sort(f.ran)
			slices.Sort(tc.want)
			if !slices.Equal(f.ran, tc.want) {
				t.Errorf("ran\n %q\nwant\n %q", f.ran, tc.want)
			}
		})
	}
	f := &fakeNFT{listing: listing("drop", "docker", CommentPrefix+"from 10.244.0.0/16", CommentPrefix+"to 10.244.0.0/16"),
		listing6: listingFamily(Family6, "drop", CommentPrefix+"from fd00::/48")}
	if n, err := Remove(context.Background(), f); err != nil || n != 3 {
		t.Errorf("Remove: %d, %v; ran %q", n, err, f.ran)
	}
}

// An IPv4-only cluster on a host whose ip6 FORWARD policy is DROP (Docker
// with ip6tables) adds nothing to the ip6 chain: IPv4 behaves as before.
func TestSyncIPv4OnlyLeavesIP6ChainAlone(t *testing.T) {
	f := &fakeNFT{listing: listing("drop"), listing6: listingFamily(Family6, "drop", "docker")}
	st, added, removed, err := Sync(context.Background(), f, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")})
	if err != nil || added != 2 || removed != 0 || !st.PolicyDrop {
		t.Fatalf("Sync = %+v, %d, %d, %v", st, added, removed, err)
	}
	for _, c := range f.ran {
		if strings.Contains(c, "ip6") {
			t.Errorf("ran %q on an IPv4-only cluster", c)
		}
	}
}
