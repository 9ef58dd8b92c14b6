package agent

import (
	"net/netip"
	"testing"

	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/slim"
)

type fixedInterfaces []podlink.Interface

func (f fixedInterfaces) PodInterfaces() ([]podlink.Interface, error) { return f, nil }

// An interface without the plugin's alias is named by its pod addresses,
// of either family: an IPv6-only pod is found by its IPv6 address.
func TestDropResolverNamesPodsOfEitherFamily(t *testing.T) {
	pods := cache.NewSharedIndexInformer(&cache.ListWatch{}, &slim.Pod{}, 0, cache.Indexers{})
	for _, p := range []*slim.Pod{
		{Meta: slim.Meta{Namespace: "x", Name: "v6only"}, IPs: []netip.Addr{netip.MustParseAddr("fd00:10:244:1::5")}},
		{Meta: slim.Meta{Namespace: "x", Name: "dual"}, IPs: []netip.Addr{netip.MustParseAddr("10.244.1.6"), netip.MustParseAddr("fd00:10:244:1::6")}},
	} {
		if err := pods.GetStore().Add(p); err != nil {
			t.Fatal(err)
		}
	}
	r := &dropResolver{pods: pods, ifaces: fixedInterfaces{
		{Index: 5, Name: "trl5", Addrs: []netip.Addr{netip.MustParseAddr("fd00:10:244:1::5")}},
		{Index: 6, Name: "trl6", Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.6"), netip.MustParseAddr("fd00:10:244:1::6")}},
		{Index: 7, Name: "trl7", Addrs: []netip.Addr{netip.MustParseAddr("fd00:10:244:1::99")}},
	}}
	for idx, want := range map[uint32][2]string{5: {"trl5", "x/v6only"}, 6: {"trl6", "x/dual"}, 7: {"trl7", ""}, 8: {"", ""}} {
		if name, pod := r.Interface(idx); name != want[0] || pod != want[1] {
			t.Errorf("Interface(%d) = %q, %q; want %q, %q", idx, name, pod, want[0], want[1])
		}
	}
	if got := r.PodByIP(netip.MustParseAddr("fd00:10:244:1::6")); got != "x/dual" {
		t.Errorf("PodByIP(IPv6 of the dual pod) = %q", got)
	}
}
