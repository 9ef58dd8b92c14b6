package lab

import (
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/config"
)

func TestPlanSpreadsNodesOverSubnets(t *testing.T) {
	topo, err := Plan(Options{Nodes: 5, Subnets: 2, RoutingMode: "auto", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Subnets) != 2 || len(topo.Nodes) != 5 {
		t.Fatalf("got %d subnets, %d nodes", len(topo.Subnets), len(topo.Nodes))
	}
	seen := map[netip.Addr]string{}
	perSubnet := map[int]int{}
	for _, n := range topo.Nodes {
		sn := topo.Subnets[n.Subnet]
		if !sn.Prefix.Contains(n.Addr) {
			t.Errorf("%s address %s not in its subnet %s", n.Name, n.Addr, sn.Prefix)
		}
		if n.Gateway != sn.Gateway {
			t.Errorf("%s gateway %s, want %s", n.Name, n.Gateway, sn.Gateway)
		}
		if other, dup := seen[n.Addr]; dup {
			t.Errorf("%s and %s share %s", n.Name, other, n.Addr)
		}
		seen[n.Addr] = n.Name
		perSubnet[n.Subnet]++
		if !strings.HasPrefix(n.Netns, NetnsPrefix) {
			t.Errorf("netns %q lacks the lab prefix", n.Netns)
		}
	}
	if perSubnet[0] != 3 || perSubnet[1] != 2 {
		t.Errorf("nodes per subnet = %v, want 3 and 2", perSubnet)
	}
	if _, dup := seen[topo.ControlPlane.Addr]; dup {
		t.Errorf("control plane address %s collides with a node", topo.ControlPlane.Addr)
	}
	if _, err := topo.Node("node9"); err == nil {
		t.Error("unknown node accepted")
	}
	if got := topo.APIServerURL(); got != "https://172.30.1.2:6443" {
		t.Errorf("APIServerURL = %s", got)
	}
}

func TestOptionsValidateReportsAllProblems(t *testing.T) {
	err := Options{Nodes: 0, Subnets: 9, RoutingMode: "bgp", APIPort: 80}.Validate()
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"--nodes", "--subnets", "--routing-mode", "--api-port"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if err := (Options{Nodes: 3, Subnets: 2, RoutingMode: "vxlan", APIPort: 16443}).Validate(); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}

func TestOverlaps(t *testing.T) {
	host := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("10.96.5.0/24"), netip.MustParsePrefix("172.16.0.0/12")}
	got := Overlaps(host)
	if len(got) != 2 || got[0] != host[2] || got[1] != host[3] {
		t.Errorf("Overlaps = %v, want [%s %s]", got, host[2], host[3])
	}
}

func TestCertificatesChainToTheLabCA(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue(CertSpec{CommonName: "system:node:node1", Organization: []string{"system:nodes"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert does not verify: %v", err)
	}
	if cert.Subject.CommonName != "system:node:node1" || cert.Subject.Organization[0] != "system:nodes" {
		t.Errorf("subject = %v", cert.Subject)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a client-only certificate verified for server auth")
	}
	kc := string(Kubeconfig("https://127.0.0.1:1", ca.CertPEM, nil, nil, "tok123", "agent"))
	if !strings.Contains(kc, "token: tok123") || strings.Contains(kc, "client-certificate-data") {
		t.Errorf("token kubeconfig wrong:\n%s", kc)
	}
}

func TestNodeConfigs(t *testing.T) {
	topo, err := Plan(Options{Nodes: 2, Subnets: 1, RoutingMode: "native", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	s := NewNodeSpec(Paths{Root: "/x"}, topo.Nodes[1], nil, nil, "native")
	kc := KubeletConfig(s)
	for _, want := range []string{"failCgroupV1: false", "oomScoreAdj: 0", "cgroupRoot: /trellis-lab/node2",
		"address: 172.30.1.11", "clusterDNS: [10.96.0.10]", "cgroupsPerQOS: true"} {
		if !strings.Contains(kc, want) {
			t.Errorf("kubelet config lacks %q", want)
		}
	}
	if !strings.Contains(ContainerdConfig(), "restrict_oom_score_adj = true") ||
		!strings.Contains(ContainerdConfig(), PauseImage) {
		t.Error("containerd config lacks restrict_oom_score_adj or the sandbox image")
	}
	if got := s.hostPath("/etc/cni/net.d/10-trellis.conflist"); got != "/x/nodes/node2/fs/etc-cni-net.d/10-trellis.conflist" {
		t.Errorf("hostPath = %s", got)
	}
	if s.hostPath("/etc/passwd") != "" {
		t.Error("a non-private path mapped to a node directory")
	}
	args := strings.Join(AgentArgs(s), " ")
	if !strings.Contains(args, "--node-name=node2") || !strings.Contains(args, "--config=/etc/trellis/config.yaml") {
		t.Errorf("agent args = %s", args)
	}
	// The configuration file is read by the agent's own loader.
	c := config.Default()
	if err := config.ParseFile([]byte(AgentConfig("native")), c); err != nil {
		t.Fatalf("agent config file: %v", err)
	}
	if c.RoutingMode != "native" || len(c.ClusterCIDRs) != 1 || c.ClusterCIDRs[0].String() != ClusterCIDR {
		t.Errorf("agent config file parsed as mode %q, cluster CIDRs %v", c.RoutingMode, c.ClusterCIDRs)
	}
}

func TestParsePortProtoAndPodRef(t *testing.T) {
	if p, proto, err := ParsePortProto("81/UDP"); err != nil || p != 81 || proto != "udp" {
		t.Errorf("81/UDP = %d %s %v", p, proto, err)
	}
	if _, proto, err := ParsePortProto("80/sctp"); err != nil || proto != "sctp" {
		t.Errorf("80/sctp = %s %v", proto, err)
	}
	for _, bad := range []string{"0/tcp", "http/tcp", "80/icmp", "70000/udp"} {
		if _, _, err := ParsePortProto(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, _, err := SplitPodRef("x"); err == nil {
		t.Error("pod ref without namespace accepted")
	}
	if ns, n, err := SplitPodRef("a/b"); err != nil || ns != "a" || n != "b" {
		t.Errorf("a/b = %s %s %v", ns, n, err)
	}
}

func TestMatrixDiffAndReport(t *testing.T) {
	pods := []string{"x/a", "y/b"}
	exp := NewMatrix(pods, true)
	obs := NewMatrix(pods, true)
	obs.Set("x/a", "y/b", false)
	if d := exp.Diff(obs); d != 1 {
		t.Fatalf("Diff = %d, want 1", d)
	}
	r := Report(exp, obs)
	if !strings.Contains(r, "X!") || !strings.Contains(r, "1 of 4 cells wrong") {
		t.Errorf("report does not mark the wrong cell:\n%s", r)
	}
}

func TestNamedLabsDoNotShareNames(t *testing.T) {
	def, e2e := NewPaths(""), NewPaths("e2e")
	if def.Root == e2e.Root || def.CgroupRoot() == e2e.CgroupRoot() || DefaultAPIPort("") == DefaultAPIPort("e2e") {
		t.Errorf("default and named lab share state, cgroup or port: %+v %+v", def, e2e)
	}
	if strings.HasPrefix(e2e.NetnsPrefix()+"node1", def.NetnsPrefix()) ||
		strings.HasPrefix(NewPaths("e2ex").NetnsPrefix()+"node1", e2e.NetnsPrefix()) {
		t.Errorf("netns prefixes overlap: %q %q", def.NetnsPrefix(), e2e.NetnsPrefix())
	}
	topo, err := Plan(Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 17000, NetnsPrefix: e2e.NetnsPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range topo.Netnses() {
		if !strings.HasPrefix(n, "tle2e-") {
			t.Errorf("netns %q outside the named lab's prefix", n)
		}
	}
	if s := NewNodeSpec(e2e, topo.Nodes[0], nil, nil, "auto"); !strings.Contains(KubeletConfig(s), "cgroupRoot: /trellis-lab-e2e/node1") {
		t.Errorf("kubelet cgroup root not per lab:\n%s", KubeletConfig(s))
	}
	for _, bad := range []string{"E2E", "a-b", "toolongname", "../x"} {
		if ValidateName(bad) == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}
