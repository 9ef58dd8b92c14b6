package lab

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Component is a process the lab runs, with its command line.
type Component struct {
	Name  string
	Group string // cgroup path
	Netns string
	Argv  []string
}

// ControlPlaneComponents returns etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler with their flags. bin maps a binary name to its path.
func ControlPlaneComponents(p Paths, t Topology, bin map[string]string) []Component {
	cp := t.ControlPlane.Addr.String()
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
		"--advertise-address=" + cp, "--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", APIPort),
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--client-ca-file=" + p.pki("ca.crt"),
		"--tls-cert-file=" + p.pki("apiserver.crt"), "--tls-private-key-file=" + p.pki("apiserver.key"),
		"--kubelet-client-certificate=" + p.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p.pki("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc." + ClusterDomain,
		"--service-account-key-file=" + p.pki("sa.pub"),
		"--service-account-signing-key-file=" + p.pki("sa.key"),
		"--endpoint-reconciler-type=lease",
		"--profiling=false", "--v=1",
	}}
	kcm := Component{Name: "kube-controller-manager", Group: p.CgroupRoot() + "/control-plane", Netns: ns, Argv: []string{bin["kube-controller-manager"],
		"--kubeconfig=" + p.kc("controller-manager.conf"),
		"--authentication-kubeconfig=" + p.kc("controller-manager.conf"),
		"--authorization-kubeconfig=" + p.kc("controller-manager.conf"),
		"--bind-address=127.0.0.1",
		"--allocate-node-cidrs=true", "--cluster-cidr=" + ClusterCIDR, "--node-cidr-mask-size=24",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + p.pki("sa.key"),
		"--root-ca-file=" + p.pki("ca.crt"),
		"--cluster-signing-cert-file=" + p.pki("ca.crt"), "--cluster-signing-key-file=" + p.pki("ca.key"),
		"--leader-elect=false", "--profiling=false", "--v=1",
	}}
	sched := Component{Name: "kube-scheduler", Group: p.CgroupRoot() + "/control-plane", Netns: ns, Argv: []string{bin["kube-scheduler"],
		"--kubeconfig=" + p.kc("scheduler.conf"),
		"--authentication-kubeconfig=" + p.kc("scheduler.conf"),
		"--authorization-kubeconfig=" + p.kc("scheduler.conf"),
		"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1",
	}}
	return []Component{etcd, api, kcm, sched}
}

// LogFile is where a component's output goes.
func (p Paths) LogFile(name string) string {
	return filepath.Join(p.Logs(), strings.ReplaceAll(name, "/", "-")+".log")
}
