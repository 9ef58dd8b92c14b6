package podlink

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestHostNameDeterministic(t *testing.T) {
	a := HostName("container-1", "eth0")
	if a != HostName("container-1", "eth0") || len(a) != 14 || !IsHostName(a) || !strings.HasPrefix(a, Prefix) {
		t.Fatalf("bad name %q", a)
	}
	if a == HostName("container-1", "eth1") || a == HostName("container-2", "eth0") {
		t.Fatal("names collide across attachments")
	}
	if IsHostName("eth0") || IsHostName("trellis.vxlan") {
		t.Fatal("foreign interface taken for a pod interface")
	}
}

func TestGroupForNamespace(t *testing.T) {
	if GroupForNamespace("") != GroupUnknown {
		t.Fatal("empty namespace must be the unknown group")
	}
	seen := map[uint32]string{}
	for _, ns := range []string{"default", "kube-system", "x", "y", "z", "a-very-long-namespace-name"} {
		g := GroupForNamespace(ns)
		if g == GroupUnknown || g > 0x7fffffff || g != GroupForNamespace(ns) {
			t.Fatalf("group of %q = %d", ns, g)
		}
		if other, dup := seen[g]; dup {
			t.Fatalf("%q and %q share group %d", ns, other, g)
		}
		seen[g] = ns
	}
}

func TestAliasRoundTrip(t *testing.T) {
	for _, a := range []Alias{
		{Network: "trellis", ContainerID: "0123abcd", IfName: "eth0"},
		{Network: "net", ContainerID: "abc", IfName: "eth1", PodNamespace: "x", PodName: "a"},
		{Network: "net", ContainerID: "abc", IfName: "eth1", PodNamespace: "x", PodName: "a", PodUID: "6f1c-22"},
	} {
		got, ok := ParseAlias(a.String())
		if !ok || got != a {
			t.Errorf("round trip of %+v via %q: %+v %v", a, a.String(), got, ok)
		}
	}
}

func TestAliasOldFormatStillParses(t *testing.T) {
	// Written by plugins before pod names went into the alias (upgrade).
	got, ok := ParseAlias("trellis:trellis:abc:def:eth0")
	want := Alias{Network: "trellis", ContainerID: "abc:def", IfName: "eth0"}
	if !ok || got != want || got.Pod() != "" {
		t.Fatalf("old alias: %+v %v, want %+v", got, ok, want)
	}
	for _, bad := range []string{"", "something else", "trellis:nocolon", "trellis-v2 net=a", "trellis-v2 net=a cid=b if=c pod=nons",
		"trellis-v2 net=a cid=b if=c uid=u", "trellis-v2 net=a net=b cid=b if=c"} {
		if a, ok := ParseAlias(bad); ok {
			t.Errorf("ParseAlias(%q) = %+v, want not ok", bad, a)
		}
	}
}

func TestAliasFitsTheKernel(t *testing.T) {
	long := strings.Repeat("n", 253)
	a := Alias{Network: "trellis", ContainerID: strings.Repeat("c", 64), IfName: "eth0", PodNamespace: "ns", PodName: long, PodUID: "u"}
	s := a.String()
	if len(s) > MaxAliasLen {
		t.Fatalf("alias of %d bytes", len(s))
	}
	got, ok := ParseAlias(s)
	if !ok || got.Pod() != "" || got.ContainerID != a.ContainerID {
		t.Fatalf("too long for the pod: want the attachment without it, got %+v %v", got, ok)
	}
	// A value holding a separator cannot be written unambiguously: left out.
	if got, _ := ParseAlias(Alias{Network: "n", ContainerID: "c", IfName: "e", PodNamespace: "a b", PodName: "p"}.String()); got.Pod() != "" {
		t.Fatalf("pod with a space written: %+v", got)
	}
}

func FuzzParseAlias(f *testing.F) {
	f.Add("trellis:trellis:abc:eth0")
	f.Add("trellis-v2 net=trellis cid=abc if=eth0 pod=x/a uid=u")
	f.Add("trellis-v2 net=n cid=c if=e future=1")
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := ParseAlias(s)
		if !ok {
			return
		}
		if strings.HasPrefix(s, aliasV2) {
			// Anything the plugin could have written parses back to itself.
			if b, ok := ParseAlias(a.String()); !ok || b.Network != a.Network || b.ContainerID != a.ContainerID || b.IfName != a.IfName {
				t.Fatalf("%q → %+v → %q → %+v %v", s, a, a.String(), b, ok)
			}
		}
	})
}

func TestHostRouteConvention(t *testing.T) {
	a := netip.MustParseAddr("10.244.1.5")
	r := HostRoute(7, a)
	if got, ok := hostRouteAddr(r); !ok || got != a || r.LinkIndex != 7 {
		t.Fatalf("HostRoute → %v %v", got, ok)
	}
	v6 := netip.MustParseAddr("fd00::5")
	if got, ok := hostRouteAddr(HostRoute(7, v6)); !ok || got != v6 {
		t.Fatalf("IPv6 host route → %v %v", got, ok)
	}
	// As the kernel reports it: IPv6 routes have no scope.
	if got, ok := hostRouteAddr(&netlink.Route{Dst: HostPrefix(v6), Scope: netlink.SCOPE_UNIVERSE, Table: unix.RT_TABLE_MAIN}); !ok || got != v6 {
		t.Fatalf("IPv6 host route as the kernel lists it → %v %v", got, ok)
	}
	_, subnet, _ := net.ParseCIDR("10.244.1.0/24")
	for name, r := range map[string]*netlink.Route{
		"subnet":        {Dst: subnet, Scope: netlink.SCOPE_LINK},
		"via a gateway": {Dst: HostPrefix(a), Scope: netlink.SCOPE_UNIVERSE, Gw: net.ParseIP("10.0.0.1")},
		"other table":   {Dst: HostPrefix(a), Scope: netlink.SCOPE_LINK, Table: 100},
		"no dst":        {Scope: netlink.SCOPE_LINK},
		"IPv4 universe": {Dst: HostPrefix(a), Scope: netlink.SCOPE_UNIVERSE},
		"IPv6 via gw":   {Dst: HostPrefix(v6), Gw: net.ParseIP("fe80::1")},
	} {
		if got, ok := hostRouteAddr(r); ok {
			t.Errorf("%s taken for a host route: %v", name, got)
		}
	}
	if r.Table != unix.RT_TABLE_MAIN || r.Scope != netlink.SCOPE_LINK {
		t.Fatalf("host route %+v", r)
	}
}
