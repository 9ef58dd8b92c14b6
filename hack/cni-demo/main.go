// Command cni-demo shows trellis-cni on one host, the way a container
// runtime uses it: a throwaway "node" namespace, two "pod" namespaces wired
// through libcni (ADD), traffic between them and to the node, then DEL and
// a check that nothing is left behind.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/trellisnet/trellis/internal/cnirunner"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding trellis-cni")
	family := flag.String("ip-family", "ipv4", "pod addresses: ipv4, ipv6 or dual")
	flag.Parse()
	subnets, ok := familySubnets[*family]
	if !ok {
		fmt.Fprintf(os.Stderr, "cni-demo: -ip-family %q is not one of ipv4, ipv6, dual\n", *family)
		os.Exit(2)
	}
	if err := run(*bin, subnets); err != nil {
		fmt.Fprintln(os.Stderr, "cni-demo:", err)
		os.Exit(1)
	}
}

const (
	node    = "trellis-demo-node"
	nodeIP  = "192.0.2.1"
	nodeIP6 = "2001:db8::1"
	network = "trellis-demo"
)

// familySubnets are the pod subnets of each -ip-family.
var familySubnets = map[string][]string{
	"ipv4": {"10.244.7.0/24"},
	"ipv6": {"fd00:10:244:7::/120"},
	"dual": {"10.244.7.0/24", "fd00:10:244:7::/120"},
}

var pods = []string{"trellis-demo-pod-a", "trellis-demo-pod-b"}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func sh(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func show(args ...string) error {
	fmt.Printf("$ %s\n", strings.Join(args, " "))
	out, err := sh(args...)
	if out != "" {
		fmt.Println(indent(out))
	}
	return err
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

func cleanup(work string) {
	for _, n := range append([]string{node}, pods...) {
		_ = cnirunner.DeleteNetNS(n)
	}
	_ = os.RemoveAll(work)
}

func run(bin string, subnets []string) error {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(abs, "trellis-cni")); err != nil {
		return fmt.Errorf("trellis-cni not built (run make build): %w", err)
	}
	work := filepath.Join(os.TempDir(), "trellis-cni-demo")
	cleanup(work) // leftovers of an interrupted demo
	defer cleanup(work)

	step("A node: network namespace %s with addresses %s and %s (IPv4 forwarding on; ADD turns IPv6 forwarding on)", node, nodeIP, nodeIP6)
	nodeNS, err := cnirunner.NewNetNS(node)
	if err != nil {
		return err
	}
	defer nodeNS.Close()
	if err := cnirunner.Sysctl(nodeNS, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if _, err := sh("ip", "-n", node, "addr", "add", nodeIP+"/32", "dev", "lo"); err != nil {
		return fmt.Errorf("node address: %w", err)
	}
	if _, err := sh("ip", "-n", node, "addr", "add", nodeIP6+"/128", "dev", "lo", "nodad"); err != nil {
		return fmt.Errorf("node address: %w", err)
	}
	conflist, _ := json.MarshalIndent(map[string]any{
		"cniVersion": "1.1.0", "name": network,
		"plugins": []any{map[string]any{
			"type": "trellis-cni", "mtu": 1500,
			"ipam":    map[string]any{"subnets": subnets, "dataDir": filepath.Join(work, "ipam")},
			"logFile": filepath.Join(work, "cni.log"),
		}},
	}, "", "  ")
	fmt.Printf("CNI configuration (as a runtime reads it from /etc/cni/net.d):\n%s\n", indent(string(conflist)))
	r, err := cnirunner.New(conflist, []string{abs}, filepath.Join(work, "cache"), nodeNS)
	if err != nil {
		return err
	}
	ctx := context.Background()
	addrs := map[string][]string{}
	for _, p := range pods {
		step("CNI ADD for %s (through libcni, as containerd calls it)", p)
		pn, err := cnirunner.NewNetNS(p)
		if err != nil {
			return err
		}
		res, err := r.Add(ctx, "demo-"+p, pn.Path(), "eth0")
		pn.Close()
		if err != nil {
			return fmt.Errorf("ADD %s: %w", p, err)
		}
		out, _ := json.MarshalIndent(res, "", "  ")
		fmt.Println(indent(string(out)))
		var parsed struct {
			IPs []struct{ Address string } `json:"ips"`
		}
		_ = json.Unmarshal(out, &parsed)
		for _, ip := range parsed.IPs {
			addrs[p] = append(addrs[p], strings.Split(ip.Address, "/")[0])
		}
		if err := show("ip", "-n", p, "-br", "addr", "show", "eth0"); err != nil {
			return err
		}
		if err := show("ip", "-n", p, "route"); err != nil {
			return err
		}
		if err := show("ip", "-n", p, "-6", "route"); err != nil {
			return err
		}
		if err := show("ip", "-n", p, "neigh"); err != nil {
			return err
		}
	}
	step("The node's side: one interface and one host route (/32, /128) per pod address, no bridge")
	_ = show("ip", "-n", node, "-br", "link", "show", "type", "veth")
	_ = show("ip", "-n", node, "route")
	_ = show("ip", "-n", node, "-6", "route", "show", "proto", "boot")

	step("Traffic in each family: pod a -> pod b, pod a -> node, pod b -> pod a")
	for i, a := range addrs[pods[0]] {
		host := nodeIP
		if strings.Contains(a, ":") {
			host = nodeIP6
		}
		for _, c := range [][2]string{{pods[0], addrs[pods[1]][i]}, {pods[0], host}, {pods[1], a}} {
			if err := show("ip", "netns", "exec", c[0], "ping", "-c", "2", "-i", "0.2", "-W", "1", c[1]); err != nil {
				return fmt.Errorf("ping from %s to %s failed: %w", c[0], c[1], err)
			}
		}
	}
	step("CHECK: the plugin verifies both attachments")
	for _, p := range pods {
		if err := r.Check(ctx, "demo-"+p, "/run/netns/"+p, "eth0"); err != nil {
			return fmt.Errorf("CHECK %s: %w", p, err)
		}
		fmt.Printf("    %s: ok\n", p)
	}
	step("CNI DEL for both pods (twice: DEL is idempotent)")
	for _, p := range pods {
		for range 2 {
			if err := r.Del(ctx, "demo-"+p, "/run/netns/"+p, "eth0"); err != nil {
				return fmt.Errorf("DEL %s: %w", p, err)
			}
		}
		fmt.Printf("    %s: deleted\n", p)
	}
	left, _ := sh("ip", "-n", node, "-br", "link", "show", "type", "veth")
	entries, _ := filepath.Glob(filepath.Join(work, "ipam", network, "a_*"))
	if left != "" || len(entries) != 0 {
		return fmt.Errorf("DEL left interfaces %q and allocations %v", left, entries)
	}
	fmt.Println("    no pod interface, route or address allocation left")
	step("The plugin's log: one line per call")
	log, _ := os.ReadFile(filepath.Join(work, "cni.log"))
	fmt.Println(indent(strings.TrimSpace(string(log))))
	fmt.Println("\nDemo complete: namespaces removed.")
	return nil
}
