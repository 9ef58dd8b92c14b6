package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func key(i int) Key { return Key{ContainerID: fmt.Sprintf("c%04d", i), IfName: "eth0"} }

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestUsableReservesNetworkGatewayBroadcast(t *testing.T) {
	cases := []struct {
		cidr, first, last string
		ok                bool
	}{
		{"10.0.0.0/24", "10.0.0.2", "10.0.0.254", true},
		{"10.0.0.0/30", "10.0.0.2", "10.0.0.2", true},
		{"10.0.0.0/31", "", "", false},
		{"10.0.0.7/29", "10.0.0.2", "10.0.0.6", true}, // not masked on input
		{"fd00::/120", "fd00::2", "fd00::fe", true},
		{"fd00::/127", "", "", false},
	}
	for _, c := range cases {
		first, last, ok := Usable(mustPrefix(c.cidr))
		if ok != c.ok {
			t.Fatalf("%s: ok=%v want %v", c.cidr, ok, c.ok)
		}
		if ok && (first.String() != c.first || last.String() != c.last) {
			t.Errorf("%s: usable %s-%s, want %s-%s", c.cidr, first, last, c.first, c.last)
		}
	}
}

func TestAllocateNoDuplicatesUntilExhausted(t *testing.T) {
	var s State
	ranges := []netip.Prefix{mustPrefix("10.1.0.0/26"), mustPrefix("10.2.0.0/28")}
	want := (64 - 3) + (16 - 3)
	seen := map[netip.Addr]bool{}
	for i := range want {
		addrs, isNew, err := s.Allocate(key(i), ranges)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if !isNew || len(addrs) != 1 {
			t.Fatalf("allocation %d: new=%v addrs=%v", i, isNew, addrs)
		}
		a := addrs[0]
		if seen[a] {
			t.Fatalf("address %s handed out twice", a)
		}
		seen[a] = true
		for _, r := range ranges {
			if r.Contains(a) && (a == r.Addr() || a == r.Addr().Next() || a == lastAddr(r)) {
				t.Fatalf("reserved address %s handed out", a)
			}
		}
	}
	_, _, err := s.Allocate(key(want), ranges)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("expected exhaustion error, got %v", err)
	}
}

func TestAllocateIdempotent(t *testing.T) {
	var s State
	ranges := []netip.Prefix{mustPrefix("10.1.0.0/24")}
	a1, n1, err := s.Allocate(key(1), ranges)
	if err != nil || !n1 {
		t.Fatal(err, n1)
	}
	a2, n2, err := s.Allocate(key(1), ranges)
	if err != nil {
		t.Fatal(err)
	}
	if n2 || a2[0] != a1[0] || len(s.Allocations) != 1 {
		t.Fatalf("second allocate for the same key: %v new=%v (first %v), %d allocations", a2, n2, a1, len(s.Allocations))
	}
	// A different ifname of the same container is a different attachment.
	a3, _, _ := s.Allocate(Key{ContainerID: key(1).ContainerID, IfName: "net1"}, ranges)
	if a3[0] == a1[0] {
		t.Fatal("second interface of a container got the same address")
	}
}

func TestReleasedAddressNotReusedUntilRangeCycled(t *testing.T) {
	var s State
	ranges := []netip.Prefix{mustPrefix("10.9.0.0/28")} // usable .2-.14: 13 addresses
	first, _, _ := s.Allocate(key(0), ranges)
	s.Release(key(0))
	seen := map[netip.Addr]bool{}
	for i := 1; i <= 12; i++ {
		a, _, err := s.Allocate(key(i), ranges)
		if err != nil {
			t.Fatal(err)
		}
		if a[0] == first[0] {
			t.Fatalf("released %s reused after only %d other allocations", first[0], i-1)
		}
		if seen[a[0]] {
			t.Fatalf("%s handed out twice while free addresses remained", a[0])
		}
		seen[a[0]] = true
	}
	// Every other address is in use now: the released one is next.
	a, _, err := s.Allocate(key(13), ranges)
	if err != nil || a[0] != first[0] {
		t.Fatalf("after cycling the range expected %s, got %v (%v)", first[0], a, err)
	}
}

func TestDualStackOneAddressPerFamily(t *testing.T) {
	var s State
	ranges := []netip.Prefix{mustPrefix("10.1.0.0/24"), mustPrefix("fd00:1::/120")}
	addrs, _, err := s.Allocate(key(1), ranges)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 2 || !addrs[0].Is4() || !addrs[1].Is6() {
		t.Fatalf("want one v4 and one v6 address, got %v", addrs)
	}
}

func TestGCReleasesExactlyInvalid(t *testing.T) {
	var s State
	ranges := []netip.Prefix{mustPrefix("10.1.0.0/24")}
	valid := map[Key]bool{}
	for i := range 20 {
		if _, _, err := s.Allocate(key(i), ranges); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			valid[key(i)] = true
		}
	}
	freed := s.GC(valid)
	if len(freed) != 20-len(valid) {
		t.Fatalf("freed %d, want %d", len(freed), 20-len(valid))
	}
	for _, f := range freed {
		if valid[f.Key] {
			t.Fatalf("GC freed valid attachment %s", f.Key)
		}
	}
	for _, a := range s.Allocations {
		if !valid[a.Key] {
			t.Fatalf("GC kept invalid attachment %s", a.Key)
		}
	}
}

// Property: under any random sequence of allocate/release/GC, no address is
// ever held by two keys, and a key holds at most one address per family.
func TestAllocatorRandomOperations(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		r := rand.New(rand.NewPCG(seed, seed*7))
		var s State
		ranges := []netip.Prefix{mustPrefix("10.3.0.0/27"), mustPrefix("fd00:3::/123")}
		for step := range 400 {
			k := key(r.IntN(40))
			switch op := r.IntN(10); {
			case op < 6:
				if _, _, err := s.Allocate(k, ranges); err != nil && !errors.Is(err, ErrExhausted) {
					t.Fatalf("seed %d step %d: %v", seed, step, err)
				}
			case op < 9:
				s.Release(k)
			default:
				valid := map[Key]bool{}
				for _, a := range s.Allocations {
					if r.IntN(2) == 0 {
						valid[a.Key] = true
					}
				}
				s.GC(valid)
			}
			owner := map[netip.Addr]Key{}
			perFam := map[string]int{}
			for _, a := range s.Allocations {
				if o, dup := owner[a.Addr]; dup {
					t.Fatalf("seed %d step %d: %s held by %s and %s", seed, step, a.Addr, o, a.Key)
				}
				owner[a.Addr] = a.Key
				perFam[fmt.Sprint(a.Key, a.Addr.Is4())]++
				if perFam[fmt.Sprint(a.Key, a.Addr.Is4())] > 1 {
					t.Fatalf("seed %d step %d: %s holds two addresses of one family", seed, step, a.Key)
				}
			}
		}
	}
}
