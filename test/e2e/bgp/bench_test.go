//go:build e2e

package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/lab/tor"
)

// `make bench-bgp`: BGP's convergence and scale figures on this suite's
// lab (3 nodes over 2 subnets, routing mode bgp, BIRD as the ToR, restart
// time labRestartTime). Not part of `make test` (the name does not start
// with TestE2E). Rounds and sizes come from the environment (defaults in
// brackets): TRELLIS_BENCH_BGP_ROUNDS [5] new-node rounds and BFD link cuts,
// TRELLIS_BENCH_BGP_HOLD_ROUNDS [2] link cuts without BFD,
// TRELLIS_BENCH_BGP_HOLD_TIME [9] their hold time in seconds,
// TRELLIS_BENCH_BGP_PREFIXES [1000] prefixes the ToR announces (and
// withdraws) TRELLIS_BENCH_BGP_PREFIX_ROUNDS [3] times,
// TRELLIS_BENCH_BGP_SERVICES [500] Services with an external IP. The table
// is printed at the end (lines starting `BENCH`).
func TestBenchBGP(t *testing.T) {
	requireBGPLab(t)
	waitToR(t, 90*time.Second)
	var rows []benchRow
	defer func() { benchPrint(t, rows) }()

	rounds := benchEnvInt("TRELLIS_BENCH_BGP_ROUNDS", 5)
	rows = append(rows, benchNewNode(t, rounds)...)
	rows = append(rows, benchLinkCut(t, rounds, benchEnvInt("TRELLIS_BENCH_BGP_HOLD_ROUNDS", 2),
		time.Duration(benchEnvInt("TRELLIS_BENCH_BGP_HOLD_TIME", 9))*time.Second)...)
	rows = append(rows, benchScale(t, benchEnvInt("TRELLIS_BENCH_BGP_PREFIX_ROUNDS", 3), benchEnvInt("TRELLIS_BENCH_BGP_PREFIXES", 1000),
		benchEnvInt("TRELLIS_BENCH_BGP_SERVICES", 500))...)
}

// benchRow is one line of the table: a figure, its samples and what they
// are in.
type benchRow struct {
	what    string
	samples []time.Duration
	note    string
}

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchQuantile is the nearest-rank q-quantile of sorted samples (with 5
// samples p99 is the maximum).
func benchQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func benchMs(d time.Duration) string {
	return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond))
}

func benchPrint(t *testing.T, rows []benchRow) {
	var b strings.Builder
	b.WriteString("\nBENCH | figure | n | p50 ms | p99 ms | min–max ms | note |\n")
	b.WriteString("BENCH |---|---|---|---|---|---|\n")
	for _, r := range rows {
		s := append([]time.Duration(nil), r.samples...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		if len(s) == 0 {
			fmt.Fprintf(&b, "BENCH | %s | 0 | | | | %s |\n", r.what, r.note)
			continue
		}
		fmt.Fprintf(&b, "BENCH | %s | %d | %s | %s | %s–%s | %s |\n", r.what, len(s), benchMs(benchQuantile(s, 0.5)),
			benchMs(benchQuantile(s, 0.99)), benchMs(s[0]), benchMs(s[len(s)-1]), r.note)
	}
	t.Log(b.String())
}

// benchAgentStart is when node's agent process started (10 ms resolution:
// /proc/PID/stat's start time in clock ticks since boot, against
// /proc/uptime).
func benchAgentStart(t *testing.T, pid int) time.Time {
	t.Helper()
	now := time.Now()
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	uptime, err := strconv.ParseFloat(strings.Fields(string(up))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, starttime field 22.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	f := strings.Fields(rest)
	ticks, err := strconv.ParseFloat(f[22-3], 64)
	if err != nil {
		t.Fatal(err)
	}
	return now.Add(-time.Duration((uptime - ticks/100) * float64(time.Second)))
}

// benchRSS is the VmRSS (KiB) of node's agent and of its child trellis-bgp,
// the speaker (0 when it runs none).
func benchRSS(t *testing.T, node string) benchMem {
	t.Helper()
	pid := l.AgentPID(t, node)
	if pid == 0 {
		t.Fatalf("no agent on %s", node)
	}
	m := benchMem{agent: benchProcRSS(t, pid)}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", child))
		if err != nil {
			continue
		}
		if benchStatusField(string(st), "PPid:") == strconv.Itoa(pid) && benchStatusField(string(st), "Name:") == "trellis-bgp" {
			m.speaker = benchProcRSS(t, child)
		}
	}
	return m
}

// benchMem is an agent's and its speaker's VmRSS in KiB.
type benchMem struct{ agent, speaker int }

func (m benchMem) String() string {
	return fmt.Sprintf("agent %.1f MiB + trellis-bgp %.1f MiB", float64(m.agent)/1024, float64(m.speaker)/1024)
}

func benchProcRSS(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	kib, _ := strconv.Atoi(benchStatusField(string(data), "VmRSS:"))
	return kib
}

func benchStatusField(status, key string) string {
	for _, line := range strings.Split(status, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			return f[1]
		}
	}
	return ""
}

// benchHasRoute reports whether node's kernel has a protocol-159 route for p.
func benchHasRoute(t *testing.T, node string, p netip.Prefix) bool {
	t.Helper()
	return strings.TrimSpace(inNode(t, node, "ip", "-4", "route", "show", "exact", p.String(), "proto", "159")) != ""
}

// benchNewNode: a node's agent starting with no BGP state, as on a new
// Node, to its pod CIDR on the ToR and in every other node's kernel. Each
// round stops the node (`trellis-lab stop-node`: kubelet, containerd, the
// agent), waits until the ToR has dropped its pod CIDR (the restart time)
// and every other node's kernel with it, deletes the node's protocol-159
// routes and its /var/lib/trellis/bgp.json (so the agent sees a first start,
// with no Restart State), starts the node, and measures from the new agent
// process's start time.
func benchNewNode(t *testing.T, rounds int) []benchRow {
	node := l.Nodes()[2]
	h := nodeHost(t, node)
	cidr := podCIDR(t, node)
	var others []string
	for _, n := range l.Nodes() {
		if n != node {
			others = append(others, n)
		}
	}
	stateFile := filepath.Join(l.Paths.Node(node), "fs", "var-lib-trellis", "bgp.json")
	var toToR, toAll, running []time.Duration
	for r := 0; r < rounds; r++ {
		labNode(t, "stop-node", node)
		stopped := true
		t.Cleanup(func() {
			if stopped {
				labNode(t, "start-node", node)
			}
		})
		eventually(t, restartTime()+30*time.Second, cidr.String()+" gone from the ToR and the other nodes", func() bool {
			if len(torBest(t)[cidr]) > 0 {
				return false
			}
			for _, n := range others {
				if benchHasRoute(t, n, cidr) {
					return false
				}
			}
			return true
		})
		inNode(t, node, "ip", "-4", "route", "flush", "proto", "159")
		if err := os.Remove(stateFile); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		begin := time.Now()
		labNode(t, "start-node", node)
		stopped = false
		var pid int
		eventually(t, 120*time.Second, node+"'s agent running", func() bool { pid = l.AgentPID(t, node); return pid != 0 })
		start := benchAgentStart(t, pid)
		running = append(running, start.Sub(begin))
		var onToR time.Time
		seen := map[string]time.Time{}
		eventually(t, 60*time.Second, cidr.String()+" on the ToR via "+node+" and in every other node's kernel", func() bool {
			now := time.Now()
			if onToR.IsZero() && torHas(t, cidr, h.Addr) {
				onToR = now
			}
			for _, n := range others {
				if _, ok := seen[n]; !ok && benchHasRoute(t, n, cidr) {
					seen[n] = time.Now()
				}
			}
			return !onToR.IsZero() && len(seen) == len(others)
		})
		last := onToR
		for _, at := range seen {
			if at.After(last) {
				last = at
			}
		}
		toToR = append(toToR, onToR.Sub(start))
		toAll = append(toAll, last.Sub(start))
		figure(t, "new-node round %d: agent %d started %s after start-node; pod CIDR on the ToR %s, in every other node's kernel %s after the agent's start",
			r+1, pid, start.Sub(begin).Round(time.Millisecond), onToR.Sub(start).Round(time.Millisecond), last.Sub(start).Round(time.Millisecond))
	}
	return []benchRow{
		{"new node (agent's first start, no BGP state) → its pod CIDR on the ToR", toToR, "from the agent process's start"},
		{"new node → its pod CIDR on the ToR and in every other node's kernel (protocol 159)", toAll, "from the agent process's start"},
		{"(context) `trellis-lab start-node` → agent process started", running, "kubelet, containerd, the agent pod"},
	}
}

// benchLinkCut: a node's link cut (its switch port down) to its pod CIDR
// withdrawn on the ToR, with BFD on the node's BGPPeer (100 ms x 3) and
// without (hold time hold on the BGPPeer's timers).
func benchLinkCut(t *testing.T, bfdRounds, holdRounds int, hold time.Duration) []benchRow {
	node := l.Nodes()[1]
	h := nodeHost(t, node)
	peer := tor.PeerName(h.Subnet)
	cidr := podCIDR(t, node)
	t.Cleanup(func() {
		mergePatch(t, peers, peer, map[string]any{"spec": map[string]any{"bfd": map[string]any{"enabled": false}, "timers": nil}})
	})
	back := func(bfd bool) {
		eventually(t, 90*time.Second, cidr.String()+" on the ToR via "+node, func() bool {
			return established(t, h.Addr) && (!bfd || bfdUp(t, h.Addr)) && torHas(t, cidr, h.Addr)
		})
	}
	// A short connect-retry brings the session back soon after the link.
	mergePatch(t, peers, peer, map[string]any{"spec": map[string]any{"bfd": map[string]any{"enabled": true},
		"timers": map[string]any{"holdTimeSeconds": 90, "keepaliveSeconds": 30, "connectRetrySeconds": 1}}})
	back(true)
	var withBFD, withoutBFD []time.Duration
	for r := 0; r < bfdRounds; r++ {
		d := cutAndMeasure(t, node, 30*time.Second)
		withBFD = append(withBFD, d)
		figure(t, "link cut %d of %s with BFD: withdrawn from the ToR after %s", r+1, node, d.Round(time.Millisecond))
		back(true)
	}
	mergePatch(t, peers, peer, map[string]any{"spec": map[string]any{"bfd": map[string]any{"enabled": false},
		"timers": map[string]any{"holdTimeSeconds": int(hold.Seconds()), "keepaliveSeconds": max(1, int(hold.Seconds())/3), "connectRetrySeconds": 1}}})
	eventually(t, 90*time.Second, "the ToR's session with "+node+" on hold time "+hold.String()+" without BFD", func() bool {
		return established(t, h.Addr) && !bfdUp(t, h.Addr) && holdTimer(t, h.Addr) == hold && torHas(t, cidr, h.Addr)
	})
	for r := 0; r < holdRounds; r++ {
		d := cutAndMeasure(t, node, hold+30*time.Second)
		withoutBFD = append(withoutBFD, d)
		figure(t, "link cut %d of %s without BFD (hold time %s): withdrawn from the ToR after %s", r+1, node, hold, d.Round(time.Millisecond))
		back(false)
	}
	sb := append([]time.Duration(nil), withBFD...)
	sort.Slice(sb, func(i, j int) bool { return sb[i] < sb[j] })
	sn := append([]time.Duration(nil), withoutBFD...)
	sort.Slice(sn, func(i, j int) bool { return sn[i] < sn[j] })
	ratio := float64(benchQuantile(sn, 0.5)) / float64(benchQuantile(sb, 0.5))
	return []benchRow{
		{fmt.Sprintf("link cut → withdrawn on the ToR, BFD %d ms x %d", tor.BFDIntervalMs, tor.BFDMultiplier), withBFD, ""},
		{fmt.Sprintf("link cut → withdrawn on the ToR, no BFD, hold time %s", hold), withoutBFD,
			fmt.Sprintf("median without ÷ with BFD: %.1fx", ratio)},
	}
}

// benchPrefix is the i-th prefix the ToR announces in the scale run: /28s
// in 198.18.0.0/16 (RFC 2544's benchmarking range, unused by the lab).
func benchPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i / 16), byte(i % 16 * 16)}), 28)
}

// benchExternalIP is the i-th Service's external IP: 198.19.0.0/16.
func benchExternalIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(i / 250), byte(i%250 + 1)})
}

// benchToRConfig rewrites the ToR's rendered configuration for the scale
// run (the pinned template stays as it is): the Services' range
// 198.19.0.0/16 accepted from the nodes, and a static protocol announcing
// prefixes (0: none); (orig, false, 0) restores it. BIRD reloads it with
// `configure`.
func benchToRConfig(t *testing.T, orig string, services bool, prefixes int) {
	t.Helper()
	conf := orig
	if services {
		const filter = "filter from_nodes {\n\tif net ~ [ "
		if !strings.Contains(conf, filter) {
			t.Fatalf("the ToR's configuration has no %q to extend", filter)
		}
		conf = strings.Replace(conf, filter, filter+"198.19.0.0/16+, ", 1)
	}
	if prefixes > 0 {
		var b strings.Builder
		b.WriteString("\n# bench-bgp only: prefixes the ToR announces.\nprotocol static bench {\n\tipv4;\n")
		for i := 0; i < prefixes; i++ {
			fmt.Fprintf(&b, "\troute %s via %s;\n", benchPrefix(i), l.State.Topology.External.Addr)
		}
		b.WriteString("}\n")
		conf += b.String()
	}
	if err := os.WriteFile(tor.ConfigFile(l.Paths), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := birdc(t, "configure"); !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
		t.Fatalf("birdc configure: %s", out)
	}
}

// benchLearned counts node's protocol-159 routes in 198.18.0.0/16.
func benchLearned(t *testing.T, node string) int {
	t.Helper()
	return strings.Count(inNode(t, node, "ip", "-4", "route", "show", "root", "198.18.0.0/16", "proto", "159"), "\n")
}

// benchScale: the ToR announcing prefixes more routes, to all of them in
// one node's kernel, and withdrawing them, rounds times (the agent's RSS
// before and after); then, with the prefixes held, services Services with
// one external IP each, to all of them on the ToR.
func benchScale(t *testing.T, rounds, prefixes, services int) []benchRow {
	node := l.Nodes()[0]
	path := tor.ConfigFile(l.Paths)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	orig := string(data)
	restored := false
	restore := func() {
		if !restored {
			restored = true
			benchToRConfig(t, orig, false, 0)
		}
	}
	t.Cleanup(restore)
	// The default import limit (1,000 per session) would end the session.
	mergePatch(t, configurations, "default", map[string]any{"spec": map[string]any{"import": map[string]any{"maxPrefixes": 4 * prefixes}}})
	t.Cleanup(func() {
		mergePatch(t, configurations, "default", map[string]any{"spec": map[string]any{"import": map[string]any{"maxPrefixes": nil}}})
	})
	// The Services' range first, alone: a filter change makes BIRD
	// re-import every session's routes.
	benchToRConfig(t, orig, true, 0)
	waitToR(t, 90*time.Second)
	time.Sleep(3 * time.Second)
	rssBefore := benchRSS(t, node)

	var add, del, cfg []time.Duration
	var rssLearned benchMem
	for r := 0; r < rounds; r++ {
		begin := time.Now()
		benchToRConfig(t, orig, true, prefixes)
		cfg = append(cfg, time.Since(begin))
		var seen int
		eventually(t, 120*time.Second, fmt.Sprintf("%d ToR prefixes in %s's kernel", prefixes, node), func() bool {
			seen = benchLearned(t, node)
			return seen >= prefixes
		})
		add = append(add, time.Since(begin))
		time.Sleep(3 * time.Second)
		if m := benchRSS(t, node); m.agent+m.speaker > rssLearned.agent+rssLearned.speaker {
			rssLearned = m
		}
		begin = time.Now()
		benchToRConfig(t, orig, true, 0)
		eventually(t, 120*time.Second, fmt.Sprintf("the %d ToR prefixes gone from %s's kernel", prefixes, node), func() bool {
			return benchLearned(t, node) == 0
		})
		del = append(del, time.Since(begin))
		figure(t, "round %d: %d ToR prefixes in %s's kernel (protocol 159) %s after `birdc configure` added them (it returned after %s), gone %s after it removed them; RSS %v → %v",
			r+1, seen, node, add[r].Round(time.Millisecond), cfg[r].Round(time.Millisecond), del[r].Round(time.Millisecond), rssBefore, rssLearned)
	}
	// Hold them for the Services' part.
	benchToRConfig(t, orig, true, prefixes)
	eventually(t, 120*time.Second, fmt.Sprintf("%d ToR prefixes in %s's kernel", prefixes, node), func() bool {
		return benchLearned(t, node) >= prefixes
	})

	// Services with an external IP each, advertised by every node.
	nsName := l.Namespace(t, "bgp-bench", nil)
	ctx := context.Background()
	port := []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}
	var created time.Time
	first := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, services)
	next := make(chan int, services)
	for i := 0; i < services; i++ {
		next <- i
	}
	close(next)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				_, err := l.CS.CoreV1().Services(nsName).Create(ctx, &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ext-%d", i)},
					Spec:       corev1.ServiceSpec{Ports: port, ExternalIPs: []string{benchExternalIP(i).String()}},
				}, metav1.CreateOptions{})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	created = time.Now()
	close(errs)
	for err := range errs {
		t.Fatalf("creating a Service: %v", err)
	}
	var onToR int
	eventually(t, 180*time.Second, fmt.Sprintf("%d Service /32s on the ToR", services), func() bool {
		best := torBest(t)
		onToR = 0
		for i := 0; i < services; i++ {
			if len(best[netip.PrefixFrom(benchExternalIP(i), 32)]) > 0 {
				onToR++
			}
		}
		return onToR == services
	})
	all := time.Now()
	time.Sleep(3 * time.Second)
	rssServices := benchRSS(t, node)
	figure(t, "%d Services created in %s; all %d /32s on the ToR %s after the first create, %s after the last; RSS %v",
		services, created.Sub(first).Round(time.Millisecond), onToR, all.Sub(first).Round(time.Millisecond),
		all.Sub(created).Round(time.Millisecond), rssServices)

	restore()
	eventually(t, 120*time.Second, "the ToR's extra prefixes gone from "+node, func() bool { return benchLearned(t, node) == 0 })
	return []benchRow{
		{fmt.Sprintf("ToR announces %d more prefixes (`birdc configure`) → all in %s's kernel (protocol 159)", prefixes, node), add,
			fmt.Sprintf("RSS %v → %v (peak after)", rssBefore, rssLearned)},
		{fmt.Sprintf("(context) `birdc configure` adding the %d static routes, until it returns", prefixes), cfg, "the ToR's own reconfiguration"},
		{fmt.Sprintf("ToR stops announcing them → all gone from %s's kernel", node), del, ""},
		{fmt.Sprintf("%d Services with an external IP → all %d /32s on the ToR, from the first create", services, services),
			[]time.Duration{all.Sub(first)}, fmt.Sprintf("creating them took %s (8 clients)", created.Sub(first).Round(time.Millisecond))},
		{"same, from the last create", []time.Duration{all.Sub(created)},
			fmt.Sprintf("RSS %v with %d learned + %d advertised", rssServices, prefixes, services)},
	}
}
