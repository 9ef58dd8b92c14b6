package pki

import (
	"fmt"
	"net"
	"os"

	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Identities of the cluster components, as the Node authorizer and the
// bootstrap RBAC policy expect them.
const (
	userControllerManager = "system:kube-controller-manager"
	userScheduler         = "system:kube-scheduler"
	userKubeProxy         = "system:kube-proxy"
)

// GeneratePKI writes the lab CA, the API server's serving and kubelet-client
// certificates, the service-account key pair and a kubeconfig per component
// into p. The admin kubeconfig points at the host's loopback forward.
func GeneratePKI(p state.Paths, t topology.Topology) error {
	ca, err := NewCA("trellis-lab-ca")
	if err != nil {
		return err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM, "ca.key": caKey}
	issue := func(name string, s CertSpec) error {
		c, k, err := ca.Issue(s)
		if err != nil {
			return err
		}
		files[name+".crt"], files[name+".key"] = c, k
		return nil
	}
	apiIPs := []net.IP{net.ParseIP(topology.APIServiceIP), net.IP(t.ControlPlane.Addr.AsSlice()), net.ParseIP("127.0.0.1")}
	if t.HasIPv6() {
		// The kubernetes Service's address of every family and the API
		// server's IPv6 underlay address.
		apiIPs = []net.IP{net.IP(t.ControlPlane.Addr.AsSlice()), net.IP(t.ControlPlane.Addr6.AsSlice()), net.ParseIP("127.0.0.1")}
		for _, a := range t.APIServiceIPs() {
			apiIPs = append(apiIPs, net.IP(a.AsSlice()))
		}
	}
	if err := issue("apiserver", CertSpec{CommonName: "kube-apiserver", Server: true, IPs: apiIPs,
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + topology.ClusterDomain}}); err != nil {
		return err
	}
	if err := issue("apiserver-kubelet-client", CertSpec{CommonName: "kube-apiserver-kubelet-client",
		Organization: []string{"system:masters"}, Client: true}); err != nil {
		return err
	}
	saKey, saPub, err := NewServiceAccountKey()
	if err != nil {
		return err
	}
	files["sa.key"], files["sa.pub"] = saKey, saPub
	if err := writeFiles(p.PKI(), files); err != nil {
		return err
	}

	inLab := t.APIServerURL()
	kcs := map[string][]byte{}
	client := func(file, server string, s CertSpec) error {
		s.Client = true
		c, k, err := ca.Issue(s)
		if err != nil {
			return err
		}
		kcs[file], err = Kubeconfig(server, ca.CertPEM, c, k, "", s.CommonName)
		return err
	}
	loopback := fmt.Sprintf("https://127.0.0.1:%d", t.Options.APIPort)
	if err := client("admin.conf", loopback, CertSpec{CommonName: "trellis-lab-admin", Organization: []string{"system:masters"}}); err != nil {
		return err
	}
	if err := client("admin-in-lab.conf", inLab, CertSpec{CommonName: "trellis-lab-admin", Organization: []string{"system:masters"}}); err != nil {
		return err
	}
	if err := client("controller-manager.conf", inLab, CertSpec{CommonName: userControllerManager}); err != nil {
		return err
	}
	if err := client("scheduler.conf", inLab, CertSpec{CommonName: userScheduler}); err != nil {
		return err
	}
	if err := client("kube-proxy.conf", inLab, CertSpec{CommonName: userKubeProxy}); err != nil {
		return err
	}
	for _, n := range t.Nodes {
		if err := client("kubelet-"+n.Name+".conf", inLab, CertSpec{CommonName: "system:node:" + n.Name,
			Organization: []string{"system:nodes"}}); err != nil {
			return err
		}
	}
	return writeFiles(p.Kubeconfigs(), kcs)
}

// WriteAgentKubeconfig writes the kubeconfig the Trellis agents use: a
// ServiceAccount token, as a DaemonSet pod would hold.
func WriteAgentKubeconfig(p state.Paths, t topology.Topology, token string) error {
	caPEM, err := os.ReadFile(p.PKIFile("ca.crt"))
	if err != nil {
		return fmt.Errorf("reading lab CA: %w", err)
	}
	kc, err := Kubeconfig(t.APIServerURL(), caPEM, nil, nil, token, "trellis-agent")
	if err != nil {
		return err
	}
	return writeFiles(p.Kubeconfigs(), map[string][]byte{"trellis-agent.conf": kc})
}
