// Package install installs Trellis into a lab the way an operator does: the
// image imported into every node's containerd, the shipped manifest (or the
// chart) applied through the API server, so kubelet runs the agent as a
// DaemonSet pod. It also rolls the DaemonSet to another image, rolls it
// back, restarts and kills agent pods, and uninstalls Trellis.
//
// manifest.go is pure: it decodes the shipped manifest and customizes it
// (image reference, configuration overrides) without touching a cluster.
package install

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/trellisnet/trellis/internal/lab/kube"
)

// Mode is how the lab runs the Trellis agent.
type Mode string

// The install modes: the shipped manifest, the Helm chart, or plain
// processes started by the node supervisor (the dev loop).
const (
	DaemonSet Mode = "daemonset"
	Helm      Mode = "helm"
	Process   Mode = "process"
)

// ParseMode checks an --install value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case DaemonSet, Helm, Process:
		return m, nil
	case "":
		return DaemonSet, nil
	}
	return "", fmt.Errorf("--install must be daemonset, helm or process, got %q", s)
}

// Pod reports whether the agent runs as a DaemonSet pod in mode m.
func (m Mode) Pod() bool { return m == DaemonSet || m == Helm }

// Names of the shipped objects the lab works with.
const (
	Namespace      = "kube-system"
	DaemonSetName  = "trellis-agent"
	ConfigMapName  = "trellis-agent"
	ConfigKey      = "config.yaml"
	AgentContainer = "agent"
	// AgentSelector selects the agent pods.
	AgentSelector = "app.kubernetes.io/name=trellis-agent"
)

// LoadManifest reads and decodes a manifest file.
func LoadManifest(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	objs, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return objs, nil
}

// Decode splits a multi-document YAML (or JSON) manifest into objects;
// empty documents are skipped.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	objs, err := kube.DecodeManifest(data)
	if err != nil {
		return nil, err
	}
	for i, u := range objs {
		if u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("manifest object %d (%s %s) has no apiVersion", i+1, u.GetKind(), u.GetName())
		}
	}
	return objs, nil
}

// Has reports whether objs hold an object of kind.
func Has(objs []*unstructured.Unstructured, kind string) bool {
	for _, o := range objs {
		if o.GetKind() == kind {
			return true
		}
	}
	return false
}

// Customize points every container and init container of every DaemonSet
// in objs at image, and merges overrides into the agent ConfigMap's
// config.yaml (top-level keys); with encryption turned on by the overrides,
// the agent gets the WireGuard mounts (addWireGuardMounts). It fails when overrides are given and there
// is no agent ConfigMap, so a lab setting never silently goes missing.
func Customize(objs []*unstructured.Unstructured, image string, overrides map[string]any) error {
	cmSeen := false
	for _, o := range objs {
		switch o.GetKind() {
		case "DaemonSet":
			if o.GetName() == DaemonSetName && wantsWireGuard(overrides) {
				if err := addWireGuardMounts(o); err != nil {
					return err
				}
			}
			if image == "" {
				continue
			}
			for _, field := range []string{"containers", "initContainers"} {
				cs, ok, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", field)
				if err != nil {
					return fmt.Errorf("DaemonSet %s: %s: %w", o.GetName(), field, err)
				}
				if !ok {
					continue
				}
				for _, c := range cs {
					if m, ok := c.(map[string]any); ok {
						m["image"] = image
						m["imagePullPolicy"] = "IfNotPresent"
					}
				}
				if err := unstructured.SetNestedSlice(o.Object, cs, "spec", "template", "spec", field); err != nil {
					return fmt.Errorf("DaemonSet %s: %w", o.GetName(), err)
				}
			}
		case "ConfigMap":
			if o.GetName() != ConfigMapName || len(overrides) == 0 {
				continue
			}
			cmSeen = true
			data, _, _ := unstructured.NestedString(o.Object, "data", ConfigKey)
			merged, err := MergeConfig(data, overrides)
			if err != nil {
				return err
			}
			if err := unstructured.SetNestedField(o.Object, merged, "data", ConfigKey); err != nil {
				return fmt.Errorf("ConfigMap %s: %w", o.GetName(), err)
			}
		}
	}
	if len(overrides) > 0 && !cmSeen {
		return fmt.Errorf("the manifest has no ConfigMap %s to carry %v", ConfigMapName, keys(overrides))
	}
	return nil
}

// MergeConfig sets the top-level keys of overrides in the agent
// configuration document config.
func MergeConfig(config string, overrides map[string]any) (string, error) {
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(config), &m); err != nil {
		return "", fmt.Errorf("parsing the agent configuration %s: %w", ConfigKey, err)
	}
	for k, v := range overrides {
		m[k] = v
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encoding the agent configuration: %w", err)
	}
	return string(out), nil
}

// ParseOverrides parses KEY=VALUE settings of the agent configuration; each
// value is YAML ("vxlan", "true", "1450", "[a, b]").
func ParseOverrides(kvs []string) (map[string]any, error) {
	out := map[string]any{}
	var errs []error
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			errs = append(errs, fmt.Errorf("%q is not KEY=VALUE", kv))
			continue
		}
		var val any
		if err := yaml.Unmarshal([]byte(v), &val); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			continue
		}
		out[k] = val
	}
	return out, errors.Join(errs...)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
