package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent must not link client-go's clientset, informer factory or
// all-groups scheme: they register every built-in API group and made the
// executable 33 MB instead of 20 MB, most of it resident (docs/benchmarks.md,
// "Agent RSS"). Only core/v1 and networking/v1 API types may be linked.
func TestAgentLinksOnlyTheAPIGroupsItUses(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to list the agent's dependencies: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	allowedAPI := map[string]bool{"k8s.io/api/core/v1": true, "k8s.io/api/networking/v1": true}
	forbidden := map[string]bool{"k8s.io/client-go/kubernetes": true, "k8s.io/client-go/kubernetes/scheme": true,
		"k8s.io/client-go/informers": true, "k8s.io/client-go/kubernetes/typed/core/v1": true}
	var api []string
	for _, pkg := range strings.Fields(string(out)) {
		if forbidden[pkg] {
			t.Errorf("the agent links %s", pkg)
		}
		if strings.HasPrefix(pkg, "k8s.io/api/") {
			api = append(api, pkg)
			if !allowedAPI[pkg] {
				t.Errorf("the agent links API group package %s", pkg)
			}
		}
	}
	if len(api) != len(allowedAPI) {
		t.Errorf("API packages linked: %v, want exactly %v", api, allowedAPI)
	}
}

// The agent must not link GoBGP: it grew the executable from 23.6 to
// 39.5 MB and the agent's RSS by about 10 MiB on every node, BGP on or
// off. The speaker runs in the child process trellis-bgp instead
// (internal/bgp/speakerproc).
func TestAgentDoesNotLinkGoBGP(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to list the agent's dependencies: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) == 0 {
		t.Fatal("go list -deps listed nothing")
	}
	sawSpeakerproc := false
	for _, pkg := range pkgs {
		sawSpeakerproc = sawSpeakerproc || pkg == "github.com/trellisnet/trellis/internal/bgp/speakerproc"
		if strings.HasPrefix(pkg, "github.com/osrg/gobgp/") || pkg == "github.com/trellisnet/trellis/internal/bgp/speaker" {
			t.Errorf("the agent links %s", pkg)
		}
	}
	if !sawSpeakerproc {
		t.Error("the agent does not link internal/bgp/speakerproc: is the listing complete?")
	}
}
