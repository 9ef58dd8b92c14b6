package install

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// shippedManifest is the repository's deploy/trellis.yaml.
func shippedManifest(t *testing.T) []byte {
	t.Helper()
	// go test runs in the package's directory.
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "trellis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDecodeAndCustomizeShippedManifest(t *testing.T) {
	objs, err := Decode(shippedManifest(t))
	if err != nil {
		t.Fatal(err)
	}
	if !Has(objs, "DaemonSet") || !Has(objs, "ConfigMap") {
		t.Fatalf("shipped manifest lacks the DaemonSet or ConfigMap: %d objects", len(objs))
	}
	const img = "ghcr.io/trellisnet/trellis:0123456789ab"
	if err := Customize(objs, img, map[string]any{"routingMode": "vxlan"}); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "DaemonSet":
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, c := range cs {
				m := c.(map[string]any)
				if m["image"] != img || m["imagePullPolicy"] != "IfNotPresent" {
					t.Errorf("DaemonSet %s container %v: image %v pull %v", o.GetName(), m["name"], m["image"], m["imagePullPolicy"])
				}
			}
		case "ConfigMap":
			data, _, _ := unstructured.NestedString(o.Object, "data", ConfigKey)
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(data), &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg["routingMode"] != "vxlan" || cfg["vxlan"] == nil {
				t.Errorf("config.yaml after override: %v", cfg)
			}
		}
	}
}

func TestCustomizeRefusesOverridesWithoutConfigMap(t *testing.T) {
	objs, err := Decode([]byte("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\n\n"))
	if err != nil || len(objs) != 1 {
		t.Fatalf("decode: %v, %d objects", err, len(objs))
	}
	if err := Customize(objs, "", map[string]any{"routingMode": "native"}); err == nil {
		t.Fatal("overrides without a ConfigMap were accepted")
	}
}

func TestDecodeRejectsNamelessObject(t *testing.T) {
	if _, err := Decode([]byte("apiVersion: v1\nkind: ConfigMap\n")); err == nil {
		t.Fatal("an object without a name was accepted")
	}
}

func TestParseOverrides(t *testing.T) {
	got, err := ParseOverrides([]string{"routingMode=native", "mtu=1400", "fastPath=false", "clusterCIDRs=[10.0.0.0/8]"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"routingMode": "native", "mtu": float64(1400), "fastPath": false, "clusterCIDRs": []any{"10.0.0.0/8"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
	if _, err := ParseOverrides([]string{"novalue"}); err == nil || !strings.Contains(err.Error(), "KEY=VALUE") {
		t.Errorf("a setting without = gave %v", err)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": DaemonSet, "daemonset": DaemonSet, "helm": Helm, "process": Process} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseMode("kubectl"); err == nil {
		t.Error("an unknown mode was accepted")
	}
}

func writeTarball(t *testing.T, tags ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.tar")
	refs := map[name.Reference]v1.Image{}
	for _, tg := range tags {
		tag, err := name.NewTag(tg)
		if err != nil {
			t.Fatal(err)
		}
		refs[tag] = empty.Image
	}
	if err := tarball.MultiRefWriteToFile(p, refs); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImageRef(t *testing.T) {
	ref, err := ImageRef(writeTarball(t, "ghcr.io/trellisnet/trellis:854f30e3d24c"))
	if err != nil || ref != "ghcr.io/trellisnet/trellis:854f30e3d24c" {
		t.Errorf("ImageRef = %q, %v", ref, err)
	}
	if _, err := ImageRef(writeTarball(t, "ghcr.io/trellisnet/trellis:latest")); err == nil {
		t.Error("a :latest tarball was accepted")
	}
	if _, err := ImageRef(filepath.Join(t.TempDir(), "missing.tar")); err == nil || !strings.Contains(err.Error(), "make image") {
		t.Errorf("a missing tarball gave %v", err)
	}
}

// With encryption on, the agent container gets the TUN device and a
// directory for wireguard-go's socket, once, as the chart renders them.
func TestCustomizeAddsWireGuardMountsWithEncryption(t *testing.T) {
	mounts := func(objs []*unstructured.Unstructured) (vols, paths []string) {
		for _, o := range objs {
			if o.GetKind() != "DaemonSet" || o.GetName() != DaemonSetName {
				continue
			}
			vs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "volumes")
			for _, v := range vs {
				vols = append(vols, v.(map[string]any)["name"].(string))
			}
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, c := range cs {
				if c.(map[string]any)["name"] != AgentContainer {
					continue
				}
				ms, _ := c.(map[string]any)["volumeMounts"].([]any)
				for _, m := range ms {
					paths = append(paths, m.(map[string]any)["mountPath"].(string))
				}
			}
		}
		return vols, paths
	}
	count := func(xs []string, x string) int {
		n := 0
		for _, y := range xs {
			if y == x {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		enc  string
		want int
	}{{"none", 0}, {"wireguard", 1}} {
		objs, err := Decode(shippedManifest(t))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ { // customizing twice adds nothing twice
			if err := Customize(objs, "", map[string]any{"encryption": c.enc}); err != nil {
				t.Fatal(err)
			}
		}
		vols, paths := mounts(objs)
		for _, p := range []string{"/dev/net/tun", "/var/run/wireguard"} {
			if got := count(paths, p); got != c.want {
				t.Errorf("encryption %s: %d mounts of %s, want %d (mounts %v)", c.enc, got, p, c.want, paths)
			}
		}
		for _, v := range []string{"dev-net-tun", "wireguard-run"} {
			if got := count(vols, v); got != c.want {
				t.Errorf("encryption %s: %d volumes %s, want %d (volumes %v)", c.enc, got, v, c.want, vols)
			}
		}
	}
}
