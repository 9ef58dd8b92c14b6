package hostfw

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// fakeNFT answers the chain listing with listing and records every other
// command.
type fakeNFT struct {
	listing string
	ran     []string
}

func (f *fakeNFT) Run(_ context.Context, args ...string) ([]byte, error) {
	if args[0] == "-j" {
		if f.listing == "" {
			return nil, errors.New("nft -j list chain ip filter FORWARD: exit status 1: Error: No such file or directory")
		}
		return []byte(f.listing), nil
	}
	f.ran = append(f.ran, strings.Join(args, " "))
	return nil, nil
}

func listing(policy string, rules ...string) string {
	out := `{"nftables":[{"metainfo":{}},{"chain":{"family":"ip","table":"filter","name":"FORWARD","handle":1,"type":"filter","hook":"forward","prio":0,"policy":"` + policy + `"}}`
	for i, c := range rules {
		out += fmt.Sprintf(`,{"rule":{"family":"ip","table":"filter","chain":"FORWARD","handle":%d,"comment":%q,"expr":[]}}`, 10+i, c)
	}
	return out + "]}"
}

func TestSync(t *testing.T) {
	pods := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00::/48")}
	for _, tc := range []struct {
		name    string
		listing string
		want    []string
	}{
		{"no iptables filter table", "", nil},
		{"policy accept, nothing of ours", listing("accept", "docker"), nil},
		{"policy drop: both accepts appended, IPv4 only", listing("drop", "docker"), []string{
			`add rule ip filter FORWARD ip saddr 10.244.0.0/16 counter accept comment "trellis: pod forwarding from 10.244.0.0/16"`,
			`add rule ip filter FORWARD ip daddr 10.244.0.0/16 counter accept comment "trellis: pod forwarding to 10.244.0.0/16"`}},
		{"policy drop, already there", listing("drop", CommentPrefix+"from 10.244.0.0/16", CommentPrefix+"to 10.244.0.0/16"), nil},
		{"policy drop, a stale CIDR and a garbled rule of ours", listing("drop", CommentPrefix+"from 10.244.0.0/16",
			CommentPrefix+"to 10.244.0.0/16", CommentPrefix+"from 10.9.0.0/16", CommentPrefix+"sideways"), []string{
			"delete rule ip filter FORWARD handle 12", "delete rule ip filter FORWARD handle 13"}},
		{"policy back to accept: ours removed, others kept", listing("accept", "docker", CommentPrefix+"from 10.244.0.0/16"), []string{
			"delete rule ip filter FORWARD handle 11"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNFT{listing: tc.listing}
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
	f := &fakeNFT{listing: listing("drop", "docker", CommentPrefix+"from 10.244.0.0/16", CommentPrefix+"to 10.244.0.0/16")}
	if n, err := Remove(context.Background(), f); err != nil || n != 2 {
		t.Errorf("Remove: %d, %v; ran %q", n, err, f.ran)
	}
}
