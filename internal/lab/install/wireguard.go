package install

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The agent's WireGuard mounts, as the chart renders them with
// config.encryption=wireguard (deploy/helm/trellis/templates/daemonset.yaml):
// the TUN device the userspace engine opens, and a directory of the pod's
// own for wireguard-go's UAPI socket.
var wireGuardVolumes = []struct {
	name, mountPath string
	source          map[string]any
}{
	{"dev-net-tun", "/dev/net/tun", map[string]any{"hostPath": map[string]any{"path": "/dev/net/tun", "type": "CharDevice"}}},
	{"wireguard-run", "/var/run/wireguard", map[string]any{"emptyDir": map[string]any{"medium": "Memory", "sizeLimit": "1Mi"}}},
}

// wantsWireGuard reports whether the configuration overrides turn
// encryption on.
func wantsWireGuard(overrides map[string]any) bool {
	return overrides["encryption"] == "wireguard"
}

// addWireGuardMounts gives the agent container of DaemonSet ds the
// WireGuard mounts it lacks. The shipped manifest is the chart rendered
// with encryption off, which leaves them out; a lab brought up with
// encryption on needs them as a chart install with encryption on has them.
func addWireGuardMounts(ds *unstructured.Unstructured) error {
	spec, _, err := unstructured.NestedMap(ds.Object, "spec", "template", "spec")
	if err != nil || spec == nil {
		return fmt.Errorf("DaemonSet %s: no pod template: %v", ds.GetName(), err)
	}
	containers, _ := spec["containers"].([]any)
	var agent map[string]any
	for _, c := range containers {
		if m, ok := c.(map[string]any); ok && m["name"] == AgentContainer {
			agent = m
		}
	}
	if agent == nil {
		return fmt.Errorf("DaemonSet %s has no container %q", ds.GetName(), AgentContainer)
	}
	volumes, _ := spec["volumes"].([]any)
	mounts, _ := agent["volumeMounts"].([]any)
	for _, v := range wireGuardVolumes {
		if !hasEntry(volumes, "name", v.name) {
			vol := map[string]any{"name": v.name}
			for k, s := range v.source {
				vol[k] = s
			}
			volumes = append(volumes, vol)
		}
		if !hasEntry(mounts, "mountPath", v.mountPath) {
			mounts = append(mounts, map[string]any{"name": v.name, "mountPath": v.mountPath})
		}
	}
	agent["volumeMounts"] = mounts
	spec["volumes"] = volumes
	if err := unstructured.SetNestedMap(ds.Object, spec, "spec", "template", "spec"); err != nil {
		return fmt.Errorf("DaemonSet %s: %w", ds.GetName(), err)
	}
	return nil
}

// hasEntry reports whether a list of objects holds one whose key is value.
func hasEntry(list []any, key, value string) bool {
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m[key] == value {
			return true
		}
	}
	return false
}
