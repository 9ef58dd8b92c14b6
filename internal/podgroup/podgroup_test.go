package podgroup

import "testing"

func TestForNamespace(t *testing.T) {
	if ForNamespace("") != Unknown {
		t.Fatal("empty namespace must map to Unknown")
	}
	seen := map[uint32]string{}
	for _, ns := range []string{"default", "kube-system", "x", "y", "z", "netpol-1234-x"} {
		g := ForNamespace(ns)
		if g == Unknown || g > 0x7fffffff {
			t.Fatalf("%s -> %d out of range", ns, g)
		}
		if g != ForNamespace(ns) {
			t.Fatalf("%s not deterministic", ns)
		}
		if other, dup := seen[g]; dup {
			t.Fatalf("%s and %s share group %d", ns, other, g)
		}
		seen[g] = ns
	}
}
