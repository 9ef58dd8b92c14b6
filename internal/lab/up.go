package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/lab/clusterdns"
	"github.com/trellisnet/trellis/internal/lab/controlplane"
	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/pki"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/lab/tor"
)

// Env says where the lab finds its binaries.
type Env struct {
	Cache   string // TRELLIS_CACHE
	BinDir  string // Trellis' own binaries: trellis-agent, trellis-cni, trellis-pause
	Deploy  string // the shipped manifests (deploy/), for the agent's RBAC
	LabBin  string // the trellis-lab executable
	Out     io.Writer
	NoAgent bool // run the nodes without the Trellis agent
	// CNI is the cluster's pod network: CNITrellis ("" too) or
	// CNIKubeRouter (the peer of the side-by-side comparison).
	CNI string

	// How Trellis is installed: the shipped manifest (daemonset, the
	// default), the chart (helm) or node processes (process, the dev loop).
	Install  install.Mode
	ImageTar string // the Trellis image (`make image`), daemonset and helm modes
	Manifest string // the manifest applied in daemonset mode
	ChartBin string // the chart tool (tools/chart), helm mode
}

// pinned names the versioned cache entries hack/build-pinned.sh produces.
var pinned = map[string]string{
	"kube-apiserver": "v1.37.2", "kube-controller-manager": "v1.37.2", "kube-scheduler": "v1.37.2",
	"kubelet": "v1.37.2", "kube-proxy": "v1.37.2", "kubectl": "v1.37.2", "agnhost": "v1.37.2",
	"etcd": "v3.7.3", "loopback": "v1.10.0", "coredns": images.CoreDNSVersion,
}

// BenchImageTar is the benchmark image's tarball under BinDir (mk/bench.mk).
const BenchImageTar = "bench-image/trellis-bench.tar"

// AgnhostImageTar is the test image's tarball under BinDir (mk/lab.mk's
// agnhost-image: agnhost with a shell, curl and nc, as the upstream e2e
// specs expect it).
const AgnhostImageTar = "agnhost-image/agnhost.tar"

// requiredTools maps a command the lab runs to the Debian package with it.
var requiredTools = map[string]string{
	"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "containerd": "containerd",
	"ctr": "containerd", "runc": "runc", "nft": "nftables", "conntrack": "conntrack", "sysctl": "procps",
}

// Binaries resolves every binary the lab needs; missing ones are reported in
// one error that says how to build them.
func (e Env) Binaries() (map[string]string, error) {
	bin := map[string]string{}
	var missing []string
	for name, v := range pinned {
		p := filepath.Join(e.Cache, name+"-"+v, name)
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, name)
			continue
		}
		bin[name] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("pinned binaries not built: %v (run `make lab-binaries` or hack/build-pinned.sh)", missing)
	}
	for _, name := range []string{"trellis-cni", "trellis-pause"} {
		p := filepath.Join(e.BinDir, name)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s not found in %s (run `make build lab-build`)", name, e.BinDir)
		}
		bin[name] = p
	}
	// The benchmark image (`make bench-image`, part of lab-build) that
	// `trellisctl bench` runs.
	if p := filepath.Join(e.BinDir, BenchImageTar); fileExists(p) {
		bin["bench-image"] = p
	} else {
		return nil, fmt.Errorf("%s not found (run `make lab-build` or `make bench-image`)", p)
	}
	if p := filepath.Join(e.BinDir, AgnhostImageTar); fileExists(p) {
		bin["agnhost-image"] = p
	} else {
		return nil, fmt.Errorf("%s not found (run `make lab-build`)", p)
	}
	if p := filepath.Join(e.BinDir, "trellis-agent"); fileExists(p) && !e.NoAgent && !e.Install.Pod() {
		bin["trellis-agent"] = p
	}
	bin["containerd"] = "/usr/bin/containerd"
	return bin, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Preflight checks the things `up` needs before it changes anything.
func Preflight(o topology.Options) error {
	if os.Geteuid() != 0 {
		return errors.New("trellis-lab must run as root (it creates network namespaces and mounts)")
	}
	tools := maps.Clone(requiredTools)
	if o.BGP {
		maps.Copy(tools, tor.Tools)
	}
	for tool, pkg := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("missing tool %q: install the Debian package %s (or run `make deps`)", tool, pkg)
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.APIPort)))
	if err != nil {
		return fmt.Errorf("API port 127.0.0.1:%d is already in use; pick another with --api-port", o.APIPort)
	}
	l.Close()
	return nil
}

func (e Env) logf(format string, args ...any) {
	if e.Out != nil {
		fmt.Fprintf(e.Out, format+"\n", args...)
	}
}

// Leftovers reports whether anything of a previous lab is still present.
func Leftovers(p state.Paths) bool {
	ns, _ := topology.ListLabNetns(p.NetnsPrefix())
	pids, _ := proc.CgroupPIDs(p.CgroupRoot())
	return state.Exists(p) || len(ns) > 0 || len(pids) > 0
}

// Up brings a lab up. On failure the partial lab stays for inspection and
// `down` removes it.
func Up(ctx context.Context, e Env, p state.Paths, o topology.Options) error {
	start := time.Now()
	o.NetnsPrefix = p.NetnsPrefix()
	if err := o.Validate(); err != nil {
		return err
	}
	if Leftovers(p) {
		e.logf("trellis-lab: found leftovers of a previous lab; removing them first")
		if err := Down(ctx, e, p); err != nil {
			return fmt.Errorf("cleaning leftovers: %w", err)
		}
	}
	if err := Preflight(o); err != nil {
		return err
	}
	bin, err := e.Binaries()
	if err != nil {
		return err
	}
	peer := e.CNI == CNIKubeRouter
	if peer && o.BGP {
		return fmt.Errorf("--bgp peers Trellis's agents with the ToR: not with --cni %s", CNIKubeRouter)
	}
	if peer && o.IPFamilyOrDefault() != topology.IPv4 {
		return fmt.Errorf("--cni %s: the lab runs it IPv4-only, not with --ip-family %s", CNIKubeRouter, o.IPFamily)
	}
	if e.NoAgent || peer {
		e.Install = install.Process
	}
	inst, err := prepareInstall(e)
	if err != nil {
		return err
	}
	if peer {
		if err := e.peerBinaries(bin); err != nil {
			return err
		}
		if inst, err = prepareKubeRouter(ctx, e, bin); err != nil {
			return err
		}
	}
	t, err := topology.Plan(o)
	if err != nil {
		return err
	}
	hp, err := topology.HostPrefixes(ctx)
	if err != nil {
		return err
	}
	if t.HasIPv6() {
		hp6, err := topology.HostPrefixes6(ctx)
		if err != nil {
			return err
		}
		hp = append(hp, hp6...)
	}
	if ov := t.Overlaps(hp); len(ov) > 0 {
		return fmt.Errorf("the machine's network %v overlaps the lab's ranges %v", ov, t.LabRanges())
	}
	st := &state.State{Topology: t, CreatedAt: time.Now().UTC(), Phase: "network", Netns: t.Netnses(), Binaries: bin, Install: inst}
	if err := st.Save(p); err != nil {
		return err
	}
	labBin := filepath.Join(p.Bin(), "trellis-lab")
	if err := node.CopyFile(e.LabBin, labBin, 0o755); err != nil {
		return err
	}
	for _, m := range node.MountPoints() {
		if !fileExists(m) {
			if err := os.MkdirAll(m, 0o755); err != nil {
				return fmt.Errorf("creating mount point %s: %w", m, err)
			}
			st.CreatedDirs = append(st.CreatedDirs, m)
		}
	}
	if err := st.Save(p); err != nil {
		return err
	}
	family := ""
	if o.IPFamilyOrDefault() != topology.IPv4 {
		family = ", IP family " + o.IPFamily
	}
	e.logf("trellis-lab: network: %d nodes over %d subnets%s (%s)", o.Nodes, o.Subnets, family, time.Since(start).Round(time.Millisecond))
	if err := topology.BuildNetwork(ctx, t); err != nil {
		return fmt.Errorf("building the lab network: %w", err)
	}
	if o.BGP {
		if err := tor.Start(ctx, p, st, labBin); err != nil {
			return err
		}
		e.logf("trellis-lab: ToR (BIRD, AS %d) up in %s (%s); `trellis-lab tor -- show protocols`", topology.ToRASN,
			t.RouterNetns, time.Since(start).Round(time.Millisecond))
	}
	if err := pki.GeneratePKI(p, t); err != nil {
		return err
	}
	st.Phase = "control-plane"
	if err := controlplane.Start(ctx, p, st, labBin); err != nil {
		return err
	}
	e.logf("trellis-lab: control plane up (%s); API at https://127.0.0.1:%d", time.Since(start).Round(time.Millisecond), o.APIPort)
	cs, cfg, err := kube.Client(p.AdminKubeconfig())
	if err != nil {
		return err
	}
	agentProcess := !e.Install.Pod() && !peer
	_, runAgent := bin["trellis-agent"]
	runAgent = runAgent && agentProcess
	if agentProcess {
		if err := setupAgentAccess(ctx, e, p, t, cs); err != nil {
			if runAgent {
				return fmt.Errorf("agent credentials: %w", err)
			}
			e.logf("trellis-lab: WARNING: agent credentials (no agent runs): %v", err)
		}
	}
	imgDir := filepath.Join(e.Cache, "lab-images")
	var imageFiles []string
	for _, s := range images.LabImages(bin["trellis-pause"], bin["coredns"]) {
		img, err := images.BuildImage(imgDir, s)
		if err != nil {
			return err
		}
		imageFiles = append(imageFiles, img)
	}
	imageFiles = append(imageFiles, bin["agnhost-image"], bin["bench-image"])
	if inst.ImageTar != "" {
		imageFiles = append(imageFiles, inst.ImageTar)
	}
	if !runAgent && agentProcess && !peer {
		st.AgentError = "bin/trellis-agent not built: nodes run without the agent (same-node traffic only)"
		if e.NoAgent {
			st.AgentError = "started with --no-agent: nodes run without the agent (same-node traffic only)"
		}
		e.logf("trellis-lab: WARNING: %s", st.AgentError)
	}
	st.Phase = "nodes"
	for _, n := range t.Nodes {
		spec := node.NewSpec(p, n, bin, imageFiles, o.RoutingMode, agentProcess)
		spec.Encryption = o.Encryption
		spec.Cluster = node.ClusterOf(t, n)
		if err := node.Start(p, st, labBin, spec, true); err != nil {
			return err
		}
	}
	if err := st.Save(p); err != nil {
		return err
	}
	names := make([]string, 0, len(t.Nodes))
	for _, n := range t.Nodes {
		names = append(names, n.Name)
	}
	if err := kube.WaitNodes(ctx, cs, names, 120*time.Second, func(n *corev1.Node) bool { return len(n.Spec.PodCIDRs) > 0 }); err != nil {
		return fmt.Errorf("nodes did not register with a pod CIDR (see `trellis-lab logs NODE kubelet`): %w", err)
	}
	if o.BGP {
		// Before the agents start: they find the BGP API and its objects.
		if err := applyBGP(ctx, e, cs, cfg, t); err != nil {
			return err
		}
	}
	installCNI := installTrellis
	if peer {
		installCNI = installKubeRouter
	}
	if err := installCNI(ctx, e, p, st, cs); err != nil {
		return err
	}
	if !runAgent && agentProcess {
		if err := writeStaticCNI(ctx, p, cs, t); err != nil {
			return err
		}
	}
	if err := kube.WaitNodes(ctx, cs, names, 120*time.Second, kube.NodeReady); err != nil {
		return fmt.Errorf("nodes did not become Ready (see `trellis-lab status` and `trellis-lab logs NODE`): %w", err)
	}
	e.logf("trellis-lab: %d nodes Ready (%s)", len(names), time.Since(start).Round(time.Millisecond))
	st.Phase = "cluster-dns"
	if err := st.Save(p); err != nil {
		return err
	}
	if err := deployClusterDNS(ctx, e, cs, cfg, st); err != nil {
		return err
	}
	st.Phase = "running"
	if err := st.Save(p); err != nil {
		return err
	}
	e.logf("trellis-lab: lab running in %s; kubeconfig: %s", time.Since(start).Round(time.Millisecond), p.AdminKubeconfig())
	return nil
}

// applyBGP labels the nodes by subnet and applies the BGP CRDs and the
// objects that peer every node with the ToR.
func applyBGP(ctx context.Context, e Env, cs kubernetes.Interface, cfg *rest.Config, t topology.Topology) error {
	a, err := kube.NewApplier(cfg)
	if err != nil {
		return err
	}
	if err := tor.Apply(ctx, cs, a, t, tor.CRDDir(e.Deploy)); err != nil {
		return err
	}
	e.logf("trellis-lab: BGP: nodes in AS %d peer with the ToR (BGPPeers tor-1..%d), internal peering %s",
		topology.NodeASN, len(t.Subnets), t.Options.BGPPeeringOrDefault())
	return nil
}

// deployClusterDNS applies CoreDNS and the kube-dns Service and, when the
// agent networks the pods, waits until every replica answers its readiness
// probe. Without the agent, pods cannot reach the API server's Service, so
// CoreDNS cannot become ready: it is applied and the lab says so.
func deployClusterDNS(ctx context.Context, e Env, cs kubernetes.Interface, cfg *rest.Config, st *state.State) error {
	start := time.Now()
	a, err := kube.NewApplier(cfg)
	if err != nil {
		return err
	}
	wait := st.AgentError == ""
	if err := clusterdns.Deploy(ctx, a, cs, st.Topology.ClusterDNSIPs(), wait, 3*time.Minute); err != nil {
		return err
	}
	if !wait {
		e.logf("trellis-lab: WARNING: cluster DNS applied but not waited for: it needs pod networking (%s)", st.AgentError)
		return nil
	}
	s, err := clusterdns.Describe(ctx, cs)
	if err != nil {
		return err
	}
	e.logf("trellis-lab: cluster DNS available in %s: %s", time.Since(start).Round(time.Millisecond), s)
	return nil
}
