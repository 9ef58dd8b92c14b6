package probe

import (
	"net/netip"
	"slices"
	"testing"
)

// What kubelet writes for a pod in namespace web with clusterDNS 10.96.0.10.
const podResolvConf = `# written by kubelet
search web.svc.cluster.local svc.cluster.local cluster.local
nameserver 10.96.0.10
options ndots:5
`

func TestParseResolvConfKubeletFile(t *testing.T) {
	rc, err := ParseResolvConf([]byte(podResolvConf))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rc.Nameservers, []netip.Addr{netip.MustParseAddr("10.96.0.10")}) || rc.Ndots != 5 ||
		!slices.Equal(rc.Search, []string{"web.svc.cluster.local", "svc.cluster.local", "cluster.local"}) {
		t.Errorf("parsed %+v", rc)
	}
}

func TestParseResolvConfRejects(t *testing.T) {
	for name, in := range map[string]string{
		"no nameserver":  "search a.b\n",
		"bad nameserver": "nameserver 10.96.0\n",
		"bad ndots":      "nameserver 10.0.0.1\noptions ndots:x\n",
		"empty":          "",
	} {
		if rc, err := ParseResolvConf([]byte(in)); err == nil {
			t.Errorf("%s: accepted as %+v", name, rc)
		}
	}
}

func TestParseResolvConfDefaultsAndLastSearchWins(t *testing.T) {
	rc, err := ParseResolvConf([]byte("domain a.example\n; comment\nsearch b.example c.example\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions timeout:1 ndots:20\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rc.Search, []string{"b.example", "c.example"}) || len(rc.Nameservers) != 2 || rc.Ndots != 15 {
		t.Errorf("parsed %+v (want the last search line, both servers, ndots capped at 15)", rc)
	}
	rc, err = ParseResolvConf([]byte("nameserver 10.0.0.2\n"))
	if err != nil || rc.Ndots != 1 || len(rc.Search) != 0 {
		t.Errorf("defaults: %+v, %v (want ndots 1, no search)", rc, err)
	}
}

func TestCandidatesFollowResolvConfRules(t *testing.T) {
	rc, err := ParseResolvConf([]byte(podResolvConf))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		want []string
	}{
		// A short name goes through the search list first: the pod's own namespace wins.
		{"db", []string{"db.web.svc.cluster.local.", "db.svc.cluster.local.", "db.cluster.local.", "db."}},
		// Fewer dots than ndots:5: still searched first.
		{"db.other.svc.cluster.local", []string{"db.other.svc.cluster.local.web.svc.cluster.local.",
			"db.other.svc.cluster.local.svc.cluster.local.", "db.other.svc.cluster.local.cluster.local.", "db.other.svc.cluster.local."}},
		// A rooted name is asked as it is, only.
		{"db.other.svc.cluster.local.", []string{"db.other.svc.cluster.local."}},
	} {
		if got := rc.Candidates(c.name); !slices.Equal(got, c.want) {
			t.Errorf("Candidates(%q) = %v, want %v", c.name, got, c.want)
		}
	}
	rc.Ndots = 1
	if got := rc.Candidates("a.b"); got[0] != "a.b." || len(got) != 4 {
		t.Errorf("ndots 1: Candidates(a.b) = %v, want the name as it is first", got)
	}
}
