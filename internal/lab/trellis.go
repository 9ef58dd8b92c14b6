package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// rolloutTimeout bounds a whole DaemonSet rollout (every node in turn).
const rolloutTimeout = 5 * time.Minute

// prepareInstall resolves what the install mode needs before any node
// starts: the image tarball and its content-addressed reference (imported by
// every node like agnhost and pause) and the manifest or chart tool.
func prepareInstall(e Env) (state.Install, error) {
	in := state.Install{Mode: string(e.Install)}
	if !e.Install.Pod() {
		return in, nil
	}
	ref, err := install.ImageRef(e.ImageTar)
	if err != nil {
		return in, fmt.Errorf("--install %s: %w", e.Install, err)
	}
	tar, err := filepath.Abs(e.ImageTar)
	if err != nil {
		return in, err
	}
	in.Image, in.ImageTar = ref, tar
	switch e.Install {
	case install.DaemonSet:
		if _, err := install.LoadManifest(e.Manifest); err != nil {
			return in, fmt.Errorf("--install daemonset: %w", err)
		}
		if in.Manifest, err = filepath.Abs(e.Manifest); err != nil {
			return in, err
		}
	case install.Helm:
		if _, err := os.Stat(e.ChartBin); err != nil {
			return in, fmt.Errorf("--install helm: the chart tool %s is not built (`make chart-tool`, or use --install daemonset): %w", e.ChartBin, err)
		}
	}
	return in, nil
}

// labOverrides are the agent settings the lab puts into the ConfigMap. The
// agents talk to the API server at its own address, as the install guide
// recommends, not through kube-proxy's Service rules.
func labOverrides(t topology.Topology) map[string]any {
	cidrs := []any{}
	for _, p := range t.ClusterCIDRs() { // every family: the agent routes no family they do not bound
		cidrs = append(cidrs, p.String())
	}
	return map[string]any{"routingMode": t.Options.RoutingMode, "clusterCIDRs": cidrs,
		"apiServer": apiServerURL(t), "encryption": t.Options.EncryptionOrDefault()}
}

// apiServerURL is the API server's address as the nodes reach it.
func apiServerURL(t topology.Topology) string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(t.PrimaryIP(t.ControlPlane).String(), strconv.Itoa(topology.APIPort)))
}

// installTrellis applies the shipped manifest (or installs the chart)
// through the API server, once the nodes have registered: kubelet then runs
// the agent as a DaemonSet pod on every node. It returns when every agent
// pod is Ready.
func installTrellis(ctx context.Context, e Env, p state.Paths, st *state.State, cs kubernetes.Interface) error {
	start := time.Now()
	in := st.Install
	switch install.Mode(in.Mode) {
	case install.DaemonSet:
		objs, err := manifestObjects(e.Deploy, in.Manifest, in.Image, labOverrides(st.Topology))
		if err != nil {
			return err
		}
		if err := applyObjects(ctx, p, objs); err != nil {
			return err
		}
		e.logf("trellis-lab: applied %s (%d objects, image %s)", in.Manifest, len(objs), in.Image)
	case install.Helm:
		ref, err := name.NewTag(in.Image)
		if err != nil {
			return fmt.Errorf("image %s: %w", in.Image, err)
		}
		args := []string{"install", "--kubeconfig", p.AdminKubeconfig(), "--chart", filepath.Join(e.Deploy, "helm", "trellis"),
			"--set", "image.repository=" + ref.Context().Name(), "--set", "image.tag=" + ref.TagStr(),
			"--set", "config.routingMode=" + st.Topology.Options.RoutingMode, "--set", "config.apiServer=" + apiServerURL(st.Topology),
			"--set", "config.encryption=" + st.Topology.Options.EncryptionOrDefault()}
		if err := proc.Run(ctx, e.ChartBin, args...); err != nil {
			return fmt.Errorf("installing the chart: %w", err)
		}
		e.logf("trellis-lab: installed the chart %s (image %s)", filepath.Join(e.Deploy, "helm", "trellis"), in.Image)
	default:
		return nil
	}
	if _, err := install.WaitRollout(ctx, cs, install.DaemonSetName, rolloutTimeout); err != nil {
		return fmt.Errorf("the agent pods did not become Ready (see `trellis-lab logs NODE trellis-agent`): %w", err)
	}
	e.logf("trellis-lab: DaemonSet %s/%s Ready on every node (%s)", install.Namespace, install.DaemonSetName, time.Since(start).Round(time.Millisecond))
	return nil
}

// manifestObjects loads the manifest, adds the shipped RBAC (rbac.yaml next
// to it, or in deployDir) when the manifest has no ServiceAccount, and points
// it at image with the lab's configuration.
func manifestObjects(deployDir, manifest, image string, overrides map[string]any) ([]*unstructured.Unstructured, error) {
	objs, err := install.LoadManifest(manifest)
	if err != nil {
		return nil, err
	}
	if !install.Has(objs, "ServiceAccount") {
		rbacPath := filepath.Join(filepath.Dir(manifest), "rbac.yaml")
		if !fileExists(rbacPath) {
			rbacPath = filepath.Join(deployDir, "rbac.yaml")
		}
		rbac, err := install.LoadManifest(rbacPath)
		if err != nil {
			return nil, fmt.Errorf("%s has no ServiceAccount and the RBAC manifest is missing: %w", manifest, err)
		}
		objs = append(rbac, objs...)
	}
	if err := install.Customize(objs, image, overrides); err != nil {
		return nil, err
	}
	return objs, nil
}

func applyObjects(ctx context.Context, p state.Paths, objs []*unstructured.Unstructured) error {
	a, err := newApplier(p)
	if err != nil {
		return err
	}
	return a.Apply(ctx, objs)
}

func newApplier(p state.Paths) (*kube.Applier, error) {
	_, cfg, err := kube.Client(p.AdminKubeconfig())
	if err != nil {
		return nil, err
	}
	return kube.NewApplier(cfg)
}

// podLab loads the state of a lab that runs the agent as a DaemonSet pod.
func podLab(p state.Paths) (*state.State, *kubernetes.Clientset, error) {
	st, err := state.LoadState(p)
	if err != nil {
		return nil, nil, fmt.Errorf("no lab is running: %w", err)
	}
	if !st.Install.AgentPod() {
		return nil, nil, install.ErrNotInstalled
	}
	cs, _, err := kube.Client(p.AdminKubeconfig())
	return st, cs, err
}

// printTimes prints the per-node replacement times of a rollout.
func printTimes(e Env, what string, times []install.NodeTime, total time.Duration) {
	var parts []string
	for _, t := range times {
		parts = append(parts, fmt.Sprintf("%s %.1fs", t.Node, t.Took.Seconds()))
	}
	e.logf("trellis-lab: %s complete in %s; per node: %s", what, total.Round(time.Millisecond), strings.Join(parts, ", "))
}

// Upgrade imports the image in tarPath into every node's containerd, points
// the DaemonSet at it and waits until the rolling update (maxUnavailable 1)
// has replaced every node's agent.
func Upgrade(ctx context.Context, e Env, p state.Paths, tarPath string) ([]install.NodeTime, error) {
	st, cs, err := podLab(p)
	if err != nil {
		return nil, err
	}
	ref, err := install.ImageRef(tarPath)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(tarPath)
	if err != nil {
		return nil, err
	}
	for _, n := range st.Topology.Nodes {
		s, err := node.LoadSpec(filepath.Join(p.Node(n.Name), "node.json"))
		if err != nil {
			return nil, err
		}
		if err := install.ImportImage(ctx, s, abs); err != nil {
			return nil, err
		}
		if !contains(s.Images, abs) {
			s.Images = append(s.Images, abs) // a restarted node imports it again
			if err := node.SaveSpec(s); err != nil {
				return nil, err
			}
		}
	}
	e.logf("trellis-lab: imported %s into %d nodes", ref, len(st.Topology.Nodes))
	start := time.Now()
	if err := install.SetImage(ctx, cs, install.DaemonSetName, ref); err != nil {
		return nil, err
	}
	times, err := install.WaitRollout(ctx, cs, install.DaemonSetName, rolloutTimeout)
	if err != nil {
		return times, err
	}
	printTimes(e, "upgrade to "+ref, times, time.Since(start))
	st.Install.Image, st.Install.ImageTar = ref, abs
	return times, st.Save(p)
}

// Rollback rolls the DaemonSet back to its previous revision (`kubectl
// rollout undo`) and waits until every node runs it.
func Rollback(ctx context.Context, e Env, p state.Paths) ([]install.NodeTime, error) {
	st, cs, err := podLab(p)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	image, err := install.Undo(ctx, cs, install.DaemonSetName)
	if err != nil {
		return nil, err
	}
	times, err := install.WaitRollout(ctx, cs, install.DaemonSetName, rolloutTimeout)
	if err != nil {
		return times, err
	}
	printTimes(e, "rollback to "+image, times, time.Since(start))
	st.Install.Image = image
	return times, st.Save(p)
}

// Uninstall deletes the installed objects, runs the uninstall DaemonSet
// (uninstallManifest, `trellis-agent --uninstall` on every node) until
// every node has finished, and deletes it.
func Uninstall(ctx context.Context, e Env, p state.Paths, uninstallManifest string) error {
	st, cs, err := podLab(p)
	if err != nil {
		return err
	}
	if st.Install.Mode != string(install.DaemonSet) {
		return fmt.Errorf("uninstall of a %s install is not supported by the lab yet", st.Install.Mode)
	}
	start := time.Now()
	objs, err := manifestObjects(e.Deploy, st.Install.Manifest, st.Install.Image, nil)
	if err != nil {
		return err
	}
	a, err := newApplier(p)
	if err != nil {
		return err
	}
	// As docs/install.md#uninstall does (kubectl delete -l
	// app.kubernetes.io/part-of=trellis): the CRDs stay, and with them the
	// operator's BGP objects.
	kept := objs[:0:0]
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			kept = append(kept, o)
		}
	}
	objs = kept
	if err := a.Delete(ctx, objs); err != nil {
		return err
	}
	if err := waitNoPods(ctx, cs, install.AgentSelector); err != nil {
		return err
	}
	e.logf("trellis-lab: deleted %d objects of %s (%s)", len(objs), st.Install.Manifest, time.Since(start).Round(time.Millisecond))
	un, err := install.LoadManifest(uninstallManifest)
	if err != nil {
		return err
	}
	if err := install.Customize(un, st.Install.Image, nil); err != nil {
		return err
	}
	dsName := ""
	for _, o := range un {
		if o.GetKind() == "DaemonSet" {
			dsName = o.GetName()
		}
	}
	if dsName == "" {
		return fmt.Errorf("%s has no DaemonSet", uninstallManifest)
	}
	if err := a.Apply(ctx, un); err != nil {
		return err
	}
	if _, err := install.WaitRollout(ctx, cs, dsName, rolloutTimeout); err != nil {
		return fmt.Errorf("the uninstall DaemonSet did not finish on every node: %w", err)
	}
	e.logf("trellis-lab: %s finished on every node (%s)", dsName, time.Since(start).Round(time.Millisecond))
	if err := a.Delete(ctx, un); err != nil {
		return err
	}
	if err := waitNoPods(ctx, cs, "app.kubernetes.io/name="+dsName); err != nil {
		return err
	}
	st.Install = state.Install{Mode: "none"}
	return st.Save(p)
}

func waitNoPods(ctx context.Context, cs kubernetes.Interface, selector string) error {
	return kube.Poll(ctx, 200*time.Millisecond, 2*time.Minute, func(ctx context.Context) (bool, error) {
		l, err := cs.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		return err == nil && len(l.Items) == 0, err
	})
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
