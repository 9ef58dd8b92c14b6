//go:build e2e

package scale

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// The measured agent's process, read from /proc on this machine (the lab's
// nodes share its kernel), and its metrics endpoint, reached inside the
// node's network namespace.

const clockTicks = 100 // USER_HZ on Linux

// procStat returns a process's CPU time (user+system, in ticks), with
// that of the children it has waited for (the agent runs nft for every
// policy and masquerade transaction: their CPU is the agent's), and its
// start time.
func procStat(pid int) (ticks int64, started time.Time, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, time.Time{}, err
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 20 {
		return 0, time.Time{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	cut, _ := strconv.ParseInt(f[13], 10, 64)
	cst, _ := strconv.ParseInt(f[14], 10, 64)
	startTicks, _ := strconv.ParseInt(f[19], 10, 64)
	boot, err := bootTime()
	if err != nil {
		return 0, time.Time{}, err
	}
	return ut + st + cut + cst, boot.Add(time.Duration(startTicks) * time.Second / clockTicks), nil
}

// bootTime is when the machine booted, to the microsecond (the
// btime of /proc/stat is whole seconds: up to a second early).
func bootTime() (time.Time, error) {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, err
	}
	return now.Add(-time.Duration(ts.Nano())), nil
}

// rssMiB reads a process's resident set (VmRSS) in MiB.
func rssMiB(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

// loadAvg is /proc/loadavg's three figures.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// metrics is one scrape: series ("name" or `name{labels}`) → value.
type metrics map[string]float64

// scrape reads the agent's /metrics inside node netns nsPath.
func scrape(nsPath string) (metrics, error) {
	_, port, _ := net.SplitHostPort(config.DefaultMetricsBindAddress)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return topology.DialInNetns(nsPath, network, addr, 2*time.Second)
		}}}
	resp, err := client.Get("http://127.0.0.1:" + port + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape the agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape the agent: %s", resp.Status)
	}
	out := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// byLabel returns the series of name by the value of its one label key.
func (m metrics) byLabel(name, key string) map[string]float64 {
	out := map[string]float64{}
	prefix := name + "{"
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
			if lk, lv, ok := strings.Cut(kv, "="); ok && lk == key {
				out[strings.Trim(lv, `"`)] = v
			}
		}
	}
	return out
}

// get returns a series' value and whether it exists.
func (m metrics) get(series string) (float64, bool) { v, ok := m[series]; return v, ok }

// Metric names the bench reads (docs/metrics.md).
const (
	mHeapInuse       = "go_memstats_heap_inuse_bytes"
	mInformerSync    = "trellis_agent_informer_sync_seconds"
	mInitialSync     = "trellis_agent_initial_sync_seconds"
	mInitialSyncTook = "trellis_agent_initial_sync_duration_seconds"
	mLastSuccess     = "trellis_agent_last_successful_sync_timestamp_seconds"
	mTxOps           = "trellis_policy_transaction_operations"
	logInformerSync  = "Informer caches synced"
)

var klogHeader = regexp.MustCompile(`\b[IWE](\d{4} \d{2}:\d{2}:\d{2}\.\d{6})`)

// logTime finds the last log line containing what and returns its klog
// timestamp (this machine's local time zone, the current year).
func logTime(logs, what string) (time.Time, bool) {
	var at time.Time
	found := false
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, what) {
			continue
		}
		m := klogHeader.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ts, err := time.ParseInLocation("0102 15:04:05.000000", m[1], time.Local)
		if err != nil {
			continue
		}
		at, found = ts.AddDate(time.Now().Year(), 0, 0), true
	}
	return at, found
}

func netnsPath(name string) string { return filepath.Join("/var/run/netns", name) }
