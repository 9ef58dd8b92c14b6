package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/kuberouter"
	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// The cluster's pod network (`trellis-lab up --cni`).
const (
	CNITrellis    = "trellis"
	CNIKubeRouter = "kube-router"
)

// ParseCNI checks a --cni value ("" is Trellis).
func ParseCNI(s string) (string, error) {
	switch s {
	case "", CNITrellis:
		return CNITrellis, nil
	case CNIKubeRouter:
		return s, nil
	}
	return "", fmt.Errorf("--cni must be %s or %s, got %q", CNITrellis, CNIKubeRouter, s)
}

// peerPinned are the cache entries a kube-router lab needs besides the
// common ones: kube-router itself and the CNI plugins it configures.
var peerPinned = map[string]string{"kube-router": kuberouter.Version, "bridge": "v1.10.0", "host-local": "v1.10.0"}

// peerBinaries adds the kube-router lab's binaries to bin.
func (e Env) peerBinaries(bin map[string]string) error {
	var missing []string
	for name, v := range peerPinned {
		p := filepath.Join(e.Cache, name+"-"+v, name)
		if !fileExists(p) {
			missing = append(missing, name)
			continue
		}
		bin[name] = p
	}
	if len(missing) > 0 {
		return fmt.Errorf("pinned binaries for --cni kube-router not built: %v (run `hack/build-pinned.sh kube-router bridge host-local`)", missing)
	}
	return nil
}

// prepareKubeRouter builds (or reuses) the kube-router image every node
// imports.
func prepareKubeRouter(ctx context.Context, e Env, bin map[string]string) (state.Install, error) {
	start := time.Now()
	tar, ref, err := kuberouter.BuildImage(ctx, filepath.Join(e.Cache, "lab-images"), filepath.Join(e.Cache, "debs"), bin["kube-router"])
	if err != nil {
		return state.Install{}, fmt.Errorf("kube-router image: %w", err)
	}
	e.logf("trellis-lab: kube-router image %s (%s)", ref, time.Since(start).Round(time.Millisecond))
	return state.Install{Mode: CNIKubeRouter, Image: ref, ImageTar: tar}, nil
}

// installKubeRouter makes kube-router the cluster's CNI once the nodes have
// registered with pod CIDRs: the CNI plugins and configuration on every
// node, the router's routes to every node's pod CIDRs, and the DaemonSet. It
// returns when kube-router runs on every node and has written each node's
// pod CIDR into its CNI configuration.
func installKubeRouter(ctx context.Context, e Env, p state.Paths, st *state.State, cs kubernetes.Interface) error {
	start := time.Now()
	t := st.Topology
	podCIDRs := map[string][]string{}
	for _, n := range t.Nodes {
		kn, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		podCIDRs[n.Name] = kn.Spec.PodCIDRs
		s, err := node.LoadSpec(filepath.Join(p.Node(n.Name), "node.json"))
		if err != nil {
			return err
		}
		if err := writePeerCNI(s); err != nil {
			return err
		}
	}
	routes, err := kuberouter.RouterRoutes(t.Nodes, podCIDRs)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if err := topology.InNetns(ctx, t.RouterNetns, append([]string{"ip"}, r...)...); err != nil {
			return fmt.Errorf("router route to pod CIDR: %w", err)
		}
	}
	objs, err := kuberouter.Manifest(st.Install.Image)
	if err != nil {
		return err
	}
	if err := applyObjects(ctx, p, objs); err != nil {
		return err
	}
	e.logf("trellis-lab: applied kube-router %s (%d objects, image %s)", kuberouter.Version, len(objs), st.Install.Image)
	err = kube.Poll(ctx, 250*time.Millisecond, rolloutTimeout, func(ctx context.Context) (bool, error) {
		ds, err := cs.AppsV1().DaemonSets(kuberouter.Namespace).Get(ctx, kuberouter.DaemonSetName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if ds.Status.NumberReady != int32(len(t.Nodes)) {
			return false, nil
		}
		for _, n := range t.Nodes {
			s, err := node.LoadSpec(filepath.Join(p.Node(n.Name), "node.json"))
			if err != nil {
				return false, err
			}
			data, err := os.ReadFile(s.HostPath(kuberouter.ConfPath))
			if err != nil {
				return false, fmt.Errorf("node %s: %w", n.Name, err)
			}
			if sub, err := kuberouter.ConfSubnet(data); err != nil || sub == "" {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("kube-router did not become ready on every node (see `trellis-lab logs NODE kube-router`): %w", err)
	}
	e.logf("trellis-lab: kube-router ready on every node (%s)", time.Since(start).Round(time.Millisecond))
	return nil
}

// writePeerCNI puts the bridge and host-local plugins and kube-router's CNI
// configuration on node s.
func writePeerCNI(s node.Spec) error {
	for _, name := range kuberouter.Plugins {
		if err := node.CopyFile(s.Bin[name], s.HostPath("/opt/cni/bin/"+name), 0o755); err != nil {
			return fmt.Errorf("node %s: %w", s.Name, err)
		}
	}
	if err := atomicfile.Write(s.HostPath(kuberouter.ConfPath), []byte(kuberouter.CNIConf()), 0o644); err != nil {
		return fmt.Errorf("node %s: %w", s.Name, err)
	}
	return nil
}
