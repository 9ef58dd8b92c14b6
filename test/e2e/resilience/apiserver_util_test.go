//go:build e2e

package resilience

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/policy"
)

// Helpers that work while the API server is away: processes are found
// through the node's cgroups (kubepods/<qos>/pod<uid>/<container>) and
// their command names, addresses through netlink in their namespaces.

// cgroupProcs returns the processes named comm below the pids cgroup dir.
func cgroupProcs(dir, comm string) []int {
	var out []int
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(c)) == comm {
				out = append(out, pid)
			}
		}
		return nil
	})
	return out
}

func nodeCgroup(node string) string {
	return filepath.Join(proc.CgroupFS, "pids", l.Paths.CgroupRoot(), node)
}

// podCgroup returns the pids cgroup dir of the pod with uid on node.
func podCgroup(t *testing.T, node, uid string) string {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(nodeCgroup(node), "kubepods", "*", "pod"+uid))
	more, _ := filepath.Glob(filepath.Join(nodeCgroup(node), "kubepods", "pod"+uid))
	matches = append(matches, more...)
	if len(matches) != 1 {
		t.Fatalf("cgroup of pod %s on %s: found %v", uid, node, matches)
	}
	return matches[0]
}

// netnsID identifies the network namespace of pid ("" if it is gone).
func netnsID(pid int) string {
	id, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	return id
}

// eth0Addr returns the IPv4 address of eth0 in the namespace at path.
func eth0Addr(path string) (netip.Addr, error) {
	h, err := vns.GetFromPath(path)
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return netip.Addr{}, err
	}
	defer nh.Close()
	link, err := nh.LinkByName("eth0")
	if err != nil {
		return netip.Addr{}, err
	}
	addrs, err := nh.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("no IPv4 address on eth0 in %s: %v", path, err)
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	return a, nil
}

// dataplane returns what the agent programmed on node, for comparison:
// its nftables tables as JSON and its routes (protocol 158) in every
// table. Packet and byte counters are dropped, and so are handles: the
// periodic resync re-fills chains in one atomic transaction, which gives
// unchanged rules new handles; what must not change is the content.
func dataplane(t *testing.T, node string) string {
	t.Helper()
	ns := host(t, node).Netns
	var b strings.Builder
	for _, tbl := range [][2]string{{"inet", policy.TableName}, {"ip", masq.TableName}} {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-j", "list", "table", tbl[0], tbl[1]).Output()
		if err != nil {
			fmt.Fprintf(&b, "table %s %s: %v\n", tbl[0], tbl[1], err)
			continue
		}
		var doc map[string][]map[string]any
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("nft -j on %s: %v", node, err)
		}
		for _, obj := range doc["nftables"] {
			if _, ok := obj["metainfo"]; ok {
				continue
			}
			dropKeys(obj, "packets", "bytes", "handle")
			line, _ := json.Marshal(obj)
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "ip", "-d", "route", "show", "proto", "158", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("routes of %s: %v: %s", node, err, out)
	}
	b.Write(out)
	return b.String()
}

// dropKeys deletes keys from every object in v, however deep.
func dropKeys(v any, keys ...string) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range keys {
			delete(x, k)
		}
		for _, e := range x {
			dropKeys(e, keys...)
		}
	case []any:
		for _, e := range x {
			dropKeys(e, keys...)
		}
	}
}

// firstDiff returns the first line where a and b differ.
func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < max(len(la), len(lb)); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n  before: %s\n  now:    %s", i+1, x, y)
		}
	}
	return ""
}

// flow is a TCP probe from inside a namespace to an address, with the
// expected outcome.
type flow struct {
	name  string
	from  string // netns path
	to    netip.Addr
	allow bool
}

// check probes f once: "" when the outcome is the expected one.
func (f flow) check() string {
	timeout := 2 * time.Second
	if !f.allow {
		timeout = time.Second // unanswered within a second is the expected outcome
	}
	err := probe.ProbeFromNetns(f.from, probe.Target{Addr: f.to.String(), Port: 80, Proto: "tcp"}, timeout)
	switch {
	case f.allow && err != nil:
		return fmt.Sprintf("%s: allowed, but no answer (%v)", f.name, err)
	case !f.allow && err == nil:
		return fmt.Sprintf("%s: denied, but answered", f.name)
	}
	return ""
}

// prober probes a changing set of flows in rounds until stopped and
// counts every outcome that differs from the expectation.
type prober struct {
	mu       sync.Mutex
	flows    map[string]flow
	probes   map[string]int
	failures []string
	rounds   int
	stop     chan struct{}
	done     chan struct{}
}

func startProber(flows []flow) *prober {
	p := &prober{flows: map[string]flow{}, probes: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	p.set(flows...)
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			p.mu.Lock()
			round := make([]flow, 0, len(p.flows))
			for _, f := range p.flows {
				round = append(round, f)
			}
			p.mu.Unlock()
			var wg sync.WaitGroup
			res := make([]string, len(round))
			for i, f := range round {
				wg.Add(1)
				go func() { defer wg.Done(); res[i] = f.check() }()
			}
			wg.Wait()
			p.mu.Lock()
			p.rounds++
			for i, f := range round {
				if p.flows[f.name] != f {
					continue // removed or replaced while probing
				}
				p.probes[f.name]++
				if res[i] != "" {
					p.failures = append(p.failures, time.Now().Format("15:04:05.000")+" "+res[i])
				}
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *prober) set(flows ...flow) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range flows {
		p.flows[f.name] = f
	}
}

func (p *prober) remove(names ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range names {
		delete(p.flows, n)
	}
}

// finish stops the prober and returns the probe counts and failures.
func (p *prober) finish() (rounds int, probes map[string]int, failures []string) {
	close(p.stop)
	<-p.done
	return p.rounds, p.probes, p.failures
}

func summary(probes map[string]int) string {
	var b bytes.Buffer
	for n, c := range probes {
		fmt.Fprintf(&b, " %s=%d", n, c)
	}
	return b.String()
}
