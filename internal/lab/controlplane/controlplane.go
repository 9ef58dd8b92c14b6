// Package controlplane runs the lab's control plane: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler in the control-plane namespace,
// and the loopback forward that lets the machine reach the API server.
package controlplane

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Component is a process the lab runs, with its command line.
type Component struct {
	Name  string
	Group string // cgroup path
	Netns string
	Argv  []string
}

// Components returns etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler with their flags. bin maps a binary name to its path.
func Components(p state.Paths, t topology.Topology, bin map[string]string) []Component {
	cp := t.PrimaryIP(t.ControlPlane).String()
	serviceCIDRs := joinPrefixes(t.ServiceCIDRs())
	bindAddr := "0.0.0.0"
	if t.HasIPv6() {
		bindAddr = "::" // both families
	}
	ns := t.ControlPlane.Netns
	etcd := Component{Name: "etcd", Group: p.CgroupRoot() + "/control-plane", Netns: ns, Argv: []string{bin["etcd"],
		"--name=trellis-lab", "--data-dir=" + p.Etcd(),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=trellis-lab=http://127.0.0.1:2380",
		"--listen-metrics-urls=http://127.0.0.1:2381",
		"--quota-backend-bytes=2147483648", "--unsafe-no-fsync",
		"--log-level=warn",
	}}
	api := Component{Name: "kube-apiserver", Group: p.CgroupRoot() + "/control-plane", Netns: ns, Argv: []string{bin["kube-apiserver"],
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address=" + cp, "--bind-address=" + bindAddr, fmt.Sprintf("--secure-port=%d", topology.APIPort),
		"--service-cluster-ip-range=" + serviceCIDRs,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--client-ca-file=" + p.PKIFile("ca.crt"),
		"--tls-cert-file=" + p.PKIFile("apiserver.crt"), "--tls-private-key-file=" + p.PKIFile("apiserver.key"),
		"--kubelet-client-certificate=" + p.PKIFile("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p.PKIFile("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc." + topology.ClusterDomain,
		"--service-account-key-file=" + p.PKIFile("sa.pub"),
		"--service-account-signing-key-file=" + p.PKIFile("sa.key"),
		"--endpoint-reconciler-type=lease",
		"--profiling=false", "--v=1",
	}}
	kcm := Component{Name: "kube-controller-manager", Group: p.CgroupRoot() + "/control-plane", Netns: ns}
	kcm.Argv = append([]string{bin["kube-controller-manager"],
		"--kubeconfig=" + p.KubeconfigFile("controller-manager.conf"),
		"--authentication-kubeconfig=" + p.KubeconfigFile("controller-manager.conf"),
		"--authorization-kubeconfig=" + p.KubeconfigFile("controller-manager.conf"),
		"--bind-address=127.0.0.1",
		"--allocate-node-cidrs=true", "--cluster-cidr=" + joinPrefixes(t.ClusterCIDRs())}, nodeMaskFlags(t)...)
	kcm.Argv = append(kcm.Argv,
		"--service-cluster-ip-range="+serviceCIDRs,
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+p.PKIFile("sa.key"),
		"--root-ca-file="+p.PKIFile("ca.crt"),
		"--cluster-signing-cert-file="+p.PKIFile("ca.crt"), "--cluster-signing-key-file="+p.PKIFile("ca.key"),
		"--leader-elect=false", "--profiling=false", "--v=1",
	)
	sched := Component{Name: "kube-scheduler", Group: p.CgroupRoot() + "/control-plane", Netns: ns, Argv: []string{bin["kube-scheduler"],
		"--kubeconfig=" + p.KubeconfigFile("scheduler.conf"),
		"--authentication-kubeconfig=" + p.KubeconfigFile("scheduler.conf"),
		"--authorization-kubeconfig=" + p.KubeconfigFile("scheduler.conf"),
		"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1",
	}}
	return []Component{etcd, api, kcm, sched}
}

// StartComponent spawns c and records it in st.
func StartComponent(p state.Paths, st *state.State, labBin string, c Component) error {
	log := p.LogFile(c.Name)
	pid, err := proc.Spawn(labBin, c.Group, c.Netns, false, log, c.Argv, nil)
	if err != nil {
		return err
	}
	st.SetProcess(state.Process{Name: c.Name, Group: c.Group, PID: pid, Argv: c.Argv, Netns: c.Netns, Log: log})
	return st.Save(p)
}

// forwarderComponent is the loopback forward to the API server.
func forwarderComponent(p state.Paths, st *state.State, labBin string) Component {
	t := st.Topology
	return Component{Name: "api-forwarder", Group: p.CgroupRoot() + "/host", Argv: []string{labBin, "__forward",
		"--listen", fmt.Sprintf("127.0.0.1:%d", t.Options.APIPort),
		"--netns", "/run/netns/" + t.ControlPlane.Netns,
		"--target", fmt.Sprintf("%s:%d", t.ControlPlane.Addr, topology.APIPort)}}
}

// Start starts etcd, the API server and its loopback forward, waits for the
// API server, then starts the controller manager and scheduler.
func Start(ctx context.Context, p state.Paths, st *state.State, labBin string) error {
	comps := Components(p, st.Topology, st.Binaries)
	for _, c := range append(comps[:2:2], forwarderComponent(p, st, labBin)) {
		if err := StartComponent(p, st, labBin, c); err != nil {
			return err
		}
	}
	cs, _, err := kube.Client(p.AdminKubeconfig())
	if err != nil {
		return err
	}
	if err := kube.WaitAPIServer(ctx, cs, 90*time.Second); err != nil {
		return fmt.Errorf("API server not ready (see %s): %w", p.LogFile("kube-apiserver"), err)
	}
	for _, c := range comps[2:] {
		if err := StartComponent(p, st, labBin, c); err != nil {
			return err
		}
	}
	return nil
}

// joinPrefixes is ps comma separated, as the components' flags take them.
func joinPrefixes(ps []netip.Prefix) string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}

// nodeMaskFlags are kube-controller-manager's node mask sizes: one
// --node-cidr-mask-size for a single family, and one flag per family in a
// dual-stack cluster (which refuses the single one).
func nodeMaskFlags(t topology.Topology) []string {
	fams := t.ClusterFamilies()
	if len(fams) == 1 {
		return []string{fmt.Sprintf("--node-cidr-mask-size=%d", fams[0].NodeMaskSize)}
	}
	var out []string
	for _, f := range fams {
		out = append(out, fmt.Sprintf("--node-cidr-mask-size-%s=%d", f.Name(), f.NodeMaskSize))
	}
	return out
}
