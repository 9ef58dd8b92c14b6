package policy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/knftables"
)

// packetCounters exports the group counters of the table as per-policy
// Prometheus counters. A group's packets are attributed to every policy
// that selects the group's pods: "new connections to (ingress) / from
// (egress) pods this policy isolates, allowed or denied by their combined
// policies". Kernel counters vanish with their group; deltas are harvested
// before every sync so that no count is lost when a group is deleted.
//
// Kernel reads are serialised (readMu), so deltas are taken in the order
// the reads were made: two overlapping scrapes can never count the same
// packets twice. A scrape reuses the last read for cacheFor, so any number
// of scrapers cost one `nft` read per interval; the first scraper after the
// interval reads and the others wait for its answer.
type packetCounters struct {
	nft      knftables.Interface
	desc     *prometheus.Desc
	cacheFor time.Duration

	readMu   sync.Mutex
	lastRead time.Time // guarded by readMu: when the kernel was last read
	lastErr  error     // guarded by readMu: that read's error

	mu     sync.Mutex
	groups map[string]Group      // group name → group, from the last applied state
	last   map[string]uint64     // kernel counter name → packets last seen
	totals map[[4]string]float64 // namespace, policy, direction, verdict → packets
}

// DefaultCounterCacheFor is how long a scrape reuses the last read of the
// kernel's policy counters.
const DefaultCounterCacheFor = 5 * time.Second

func newPacketCounters(nft knftables.Interface, cacheFor time.Duration) *packetCounters {
	if cacheFor <= 0 {
		cacheFor = DefaultCounterCacheFor
	}
	return &packetCounters{
		nft: nft, cacheFor: cacheFor,
		desc: prometheus.NewDesc(metricsNamespace+"_packets_total",
			"New connections (first packets) to/from local pods a policy isolates, by the verdict of their combined policies.",
			[]string{"namespace", "policy", "direction", "verdict"}, nil),
		groups: map[string]Group{}, last: map[string]uint64{}, totals: map[[4]string]float64{},
	}
}

// harvest reads the kernel counters and adds what they counted since the
// last read to the per-policy totals (before every sync).
func (pc *packetCounters) harvest(ctx context.Context) error {
	pc.readMu.Lock()
	defer pc.readMu.Unlock()
	return pc.readLocked(ctx)
}

// harvestCached is harvest for scrapes: it reads the kernel only when the
// last read is older than cacheFor, and otherwise returns that read's error.
func (pc *packetCounters) harvestCached(ctx context.Context) error {
	pc.readMu.Lock()
	defer pc.readMu.Unlock()
	if !pc.lastRead.IsZero() && time.Since(pc.lastRead) < pc.cacheFor {
		return pc.lastErr
	}
	return pc.readLocked(ctx)
}

func (pc *packetCounters) readLocked(ctx context.Context) error {
	err := pc.read(ctx)
	pc.lastRead, pc.lastErr = time.Now(), err
	return err
}

func (pc *packetCounters) read(ctx context.Context) error {
	// List first: no table yet is not an error (and knftables' fake
	// ListCounters cannot handle a missing table).
	names, err := pc.nft.List(ctx, "counter")
	if knftables.IsNotFound(err) || (err == nil && len(names) == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list policy counters: %w", err)
	}
	counters, err := pc.nft.ListCounters(ctx)
	if err != nil {
		return fmt.Errorf("list policy counters: %w", err)
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for _, c := range counters {
		if c == nil {
			continue // knftables v0.0.22's fake pads its answer with nils
		}
		var cur uint64
		if c.Packets != nil {
			cur = *c.Packets
		}
		delta := cur
		if prev, ok := pc.last[c.Name]; ok && cur >= prev {
			delta = cur - prev
		}
		pc.last[c.Name] = cur
		if delta == 0 {
			continue
		}
		group, verdict := strings.TrimSuffix(c.Name, "-allow"), "allow"
		if strings.HasSuffix(c.Name, "-deny") {
			group, verdict = strings.TrimSuffix(c.Name, "-deny"), "deny"
		}
		g, ok := pc.groups[group]
		if !ok {
			continue
		}
		for _, p := range g.Policies {
			ns, name, _ := strings.Cut(p, "/")
			pc.totals[[4]string{ns, name, g.Direction, verdict}] += float64(delta)
		}
	}
	return nil
}

// setGroups records the groups of the state just applied and forgets
// counters that no longer exist.
func (pc *packetCounters) setGroups(d *Desired) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.groups = d.Groups
	for name := range pc.last {
		if !d.Counters[name] {
			delete(pc.last, name)
		}
	}
}

// Describe implements prometheus.Collector.
func (pc *packetCounters) Describe(ch chan<- *prometheus.Desc) { ch <- pc.desc }

// Collect implements prometheus.Collector: it harvests the kernel counters
// first unless the last read is recent (cacheFor), so a scrape sees values
// at most that old.
func (pc *packetCounters) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := pc.harvestCached(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(pc.desc, err)
		return
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for k, v := range pc.totals {
		ch <- prometheus.MustNewConstMetric(pc.desc, prometheus.CounterValue, v, k[0], k[1], k[2], k[3])
	}
}
