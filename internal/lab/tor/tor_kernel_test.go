//go:build kernel

package tor

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/netnstest"
)

// bird runs BIRD in namespace n with configuration conf until t ends (or
// stop is called: SIGKILL, as a crash) and returns its socket and log.
type birdProc struct {
	cmd       *exec.Cmd
	sock, log string
}

func startBIRD(t *testing.T, n *netnstest.Node, name, conf string) *birdProc {
	t.Helper()
	dir := t.TempDir()
	p := &birdProc{sock: filepath.Join(dir, "bird.ctl"), log: filepath.Join(dir, "bird.log")}
	cf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	lf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	p.cmd = exec.Command("ip", "netns", "exec", n.Name, "bird", "-f", "-c", cf, "-s", p.sock)
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s's BIRD: %v", name, err)
	}
	t.Cleanup(p.stop)
	deadline := time.Now().Add(5 * time.Second)
	for p.birdc("show", "status") == "" {
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(p.log)
			t.Fatalf("%s's BIRD does not answer:\n%s", name, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *birdProc) stop() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// birdc returns the output ("" when BIRD does not answer).
func (p *birdProc) birdc(args ...string) string {
	out, err := exec.Command("birdc", append([]string{"-s", p.sock}, args...)...).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

func (p *birdProc) logText() string {
	data, _ := os.ReadFile(p.log)
	return string(data)
}

// sessions are the ToR's spawned sessions and their Info column.
func sessions(p *birdProc) map[string]string {
	out := map[string]string{}
	for n, pr := range NodeSessions(ParseProtocols(p.birdc("show", "protocols"))) {
		out[n] = pr.Info
	}
	return out
}

// nodeConf is a BIRD standing in for a Trellis node (AS 64512, graceful
// restart time 5 s): it announces a pod CIDR and a prefix the ToR must
// refuse, and peers with the ToR's plain address and, with password, its
// MD5 address.
func nodeConf(password string) string { return nodeConfBFD(password, false) }

// nodeConfBFD is nodeConf, with BFD on the plain session when bfd is set.
func nodeConfBFD(password string, bfd bool) string {
	bfdConf, bfdOn := "", "off"
	if bfd {
		bfdConf, bfdOn = `protocol bfd { interface "ul0" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }
`, "on"
	}
	return bfdConf + fmt.Sprintf(`router id 172.30.1.10;
log stderr all;
debug protocols { states, events };
protocol device {}
protocol static { ipv4; route 10.244.1.0/24 blackhole; route 192.0.2.0/24 blackhole; }
template bgp t {
	local 172.30.1.10 as 64512;
	graceful restart on;
	graceful restart time 5;
	allow local as 1;
	ipv4 { import all; export where source = RTS_STATIC; };
}
protocol bgp tor from t { neighbor 172.30.1.1 as 65000; bfd %s; }
protocol bgp tor_md5 from t { neighbor 172.30.1.254 as 65000; password "%s"; }
`, bfdOn, password)
}

// The pinned configuration, run by BIRD against a BIRD peer in throwaway
// namespaces: the dynamic neighbour ranges accept the node on the plain and
// the MD5 address, the import filter keeps only the node's pod CIDR, which
// reaches the kernel; the node learns the originated prefix; a kill -9 of
// the node is a graceful restart (routes held, then withdrawn after the
// node's restart time); a wrong password never establishes.
func TestKernelToRWithABIRDPeer(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird is not installed: install the Debian package bird2 (make deps): %v", err)
	}
	rt, nd := netnstest.NewLinkedNodes(t, "172.30.1.1/24", "172.30.1.10/24")
	torBIRD := startBIRD(t, rt, "the ToR", renderTestConf(t, rt))
	node := startBIRD(t, nd, "the node", nodeConf(Password))

	waitFor(t, 20*time.Second, "both sessions established", func() bool {
		s := sessions(torBIRD)
		return len(s) == 2 && s["subnet1_1"] == "Established" && s["subnet1_md5_1"] == "Established"
	}, torBIRD)
	pod := netip.MustParsePrefix("10.244.1.0/24")
	waitFor(t, 10*time.Second, "the pod CIDR in the ToR's kernel via the node", func() bool {
		out, _ := rt.Exec("ip", "-4", "route", "show", "exact", pod.String())
		return strings.Contains(out, "via 172.30.1.10") && strings.Contains(out, "proto bird")
	}, torBIRD)
	best := BestNextHops(ParseRoutes(torBIRD.birdc("show", "route")))
	if _, ok := best[netip.MustParsePrefix("192.0.2.0/24")]; ok {
		t.Errorf("the ToR accepted 192.0.2.0/24, outside the pod and Service ranges")
	}
	waitFor(t, 10*time.Second, "the node learned the originated prefix", func() bool {
		_, ok := BestNextHops(ParseRoutes(node.birdc("show", "route")))[netip.MustParsePrefix("172.30.251.0/24")]
		return ok
	}, torBIRD)

	// kill -9 of the node: its routes are held for its restart time (5 s).
	node.stop()
	killed := time.Now()
	time.Sleep(3 * time.Second)
	if _, ok := BestNextHops(ParseRoutes(torBIRD.birdc("show", "route")))[pod]; !ok {
		t.Errorf("the ToR dropped %s %s after the node's kill -9, before its restart time", pod, time.Since(killed).Round(time.Millisecond))
	}
	waitFor(t, 10*time.Second, "the pod CIDR withdrawn after the restart time", func() bool {
		_, ok := BestNextHops(ParseRoutes(torBIRD.birdc("show", "route")))[pod]
		return !ok
	}, torBIRD)
	took := time.Since(killed)
	if took < 5*time.Second {
		t.Errorf("withdrawn %s after the kill, before the 5 s restart time", took.Round(time.Millisecond))
	}
	if log := torBIRD.logText(); !strings.Contains(log, "subnet1_1: Neighbor graceful restart detected") {
		t.Errorf("the ToR's log has no graceful restart:\n%s", log)
	}

	// The wrong password: the plain session comes back, the MD5 one never.
	startBIRD(t, nd, "the node (wrong password)", nodeConf("not-"+Password))
	waitFor(t, 20*time.Second, "the plain session established again", func() bool {
		return sessions(torBIRD)["subnet1_1"] == "Established"
	}, torBIRD)
	time.Sleep(5 * time.Second)
	if s := sessions(torBIRD)["subnet1_md5_1"]; s == "Established" {
		t.Errorf("the MD5 session established with the wrong password")
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool, torBIRD *birdProc) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s\n%s\n%s\nlog:\n%s", what, within, torBIRD.birdc("show", "protocols"),
				torBIRD.birdc("show", "route"), torBIRD.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The lab's own network planned with --bgp (namespaces renamed so a running
// lab is not disturbed) and BIRD on the rendered configuration in its router
// namespace: BIRD listens on every subnet's gateway and MD5 address, the
// route to the prefix behind the external host reaches the router's kernel,
// and a node reaches the external host's address in it.
func TestKernelToRInTheLabNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo, err := topology.Plan(topology.Options{Nodes: 3, Subnets: 2, RoutingMode: topology.RoutingModeBGP, BGP: true, APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("tlt%d-", os.Getpid()%100000)
	rename := func(s string) string { return prefix + strings.TrimPrefix(s, topology.NetnsPrefix) }
	topo.SwitchNetns, topo.RouterNetns = rename(topo.SwitchNetns), rename(topo.RouterNetns)
	topo.ControlPlane.Netns, topo.External.Netns = rename(topo.ControlPlane.Netns), rename(topo.External.Netns)
	for i := range topo.Nodes {
		topo.Nodes[i].Netns = rename(topo.Nodes[i].Netns)
	}
	t.Cleanup(func() {
		if err := topology.DeleteNetns(context.Background(), topo.Netnses()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := topology.BuildNetwork(ctx, topo); err != nil {
		t.Fatal(err)
	}
	c, err := ConfigFor(topo)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	rt := &netnstest.Node{Name: topo.RouterNetns}
	torBIRD := startBIRD(t, rt, "the ToR", string(conf))
	waitFor(t, 10*time.Second, "the origin route in the router's kernel", func() bool {
		out, _ := rt.Exec("ip", "-4", "route", "show", "exact", topo.OriginPrefix.String())
		return strings.Contains(out, "via "+topo.External.Addr.String()) && strings.Contains(out, "proto bird")
	}, torBIRD)
	out, err := rt.Exec("ss", "-Htln", "sport", "= :179")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, s := range topo.Subnets {
		for _, a := range []netip.Addr{s.Gateway, s.MD5Addr} {
			if !strings.Contains(out, a.String()+":179") && !strings.Contains(out, a.String()+"%"+s.RouterIf+":179") {
				t.Errorf("BIRD does not listen on %s:179:\n%s", a, out)
			}
		}
	}
	n := topo.Nodes[1]
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.Netns, "ping", "-c", "1", "-W", "2", topo.OriginAddr.String()).CombinedOutput(); err != nil {
		t.Errorf("%s cannot reach %s behind the external host: %v: %s", n.Name, topo.OriginAddr, err, out)
	}
}

// renderTestConf renders the ToR's configuration for one subnet on rt's
// ul0 (172.30.1.1, MD5 address 172.30.1.254, which it adds).
func renderTestConf(t *testing.T, rt *netnstest.Node) string {
	t.Helper()
	if out, err := rt.Exec("ip", "addr", "add", "172.30.1.254/24", "dev", "ul0"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c := Config{BIRDVersion: BIRDVersion, RouterID: netip.MustParseAddr("172.30.1.1"), ASN: 65000,
		OriginPrefix: netip.MustParsePrefix("172.30.251.0/24"), OriginNextHop: netip.MustParseAddr("172.30.1.20"),
		PodPrefix:       netip.MustParsePrefix("10.244.0.0/16"),
		AcceptPrefixes:  []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("172.30.252.0/24")},
		HoldTimeSeconds: HoldTimeSeconds, RestartTimeSeconds: RestartTimeSeconds, BFDIntervalMs: BFDIntervalMs,
		BFDMultiplier: BFDMultiplier, Password: Password,
		Subnets: []Subnet{{Index: 1, Name: "subnet1", Interface: "ul0", Prefix: netip.MustParsePrefix("172.30.1.0/24"),
			Address: netip.MustParseAddr("172.30.1.1"), MD5Address: netip.MustParseAddr("172.30.1.254")}}}
	conf, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(conf)
}

// A node that runs BFD with the ToR and dies (kill -9 ends its BFD as well)
// is dropped at once: BFD going down tears the session down, and BIRD does
// not hold the routes for the graceful restart. The lab's BGPPeers keep
// BFD off for that reason (docs/lab.md).
func TestKernelToRDropsABFDPeerAtOnce(t *testing.T) {
	rt, nd := netnstest.NewLinkedNodes(t, "172.30.1.1/24", "172.30.1.10/24")
	torBIRD := startBIRD(t, rt, "the ToR", renderTestConf(t, rt))
	node := startBIRD(t, nd, "the node", nodeConfBFD(Password, true))
	pod := netip.MustParsePrefix("10.244.1.0/24")
	waitFor(t, 20*time.Second, "session and BFD up, the pod CIDR on the ToR", func() bool {
		_, ok := BestNextHops(ParseRoutes(torBIRD.birdc("show", "route")))[pod]
		return ok && strings.Contains(torBIRD.birdc("show", "bfd", "sessions"), " Up ")
	}, torBIRD)
	node.stop()
	killed := time.Now()
	waitFor(t, 5*time.Second, "the pod CIDR withdrawn", func() bool {
		_, ok := BestNextHops(ParseRoutes(torBIRD.birdc("show", "route")))[pod]
		return !ok
	}, torBIRD)
	took := time.Since(killed)
	t.Logf("a BFD peer's kill -9: withdrawn after %s", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("withdrawn after %s, want about BFD's 300 ms", took.Round(time.Millisecond))
	}
	if log := torBIRD.logText(); !strings.Contains(log, "BFD session down") {
		t.Errorf("the ToR's log does not name BFD:\n%s", log)
	}
}
