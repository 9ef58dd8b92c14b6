package agent

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/trellisnet/trellis/internal/config"
)

// Linux capability numbers (linux/capability.h) the agent needs.
const (
	capNetAdmin = 12
	capPerfmon  = 38
	capBPF      = 39
)

var capNames = map[int]string{capNetAdmin: "CAP_NET_ADMIN", capPerfmon: "CAP_PERFMON", capBPF: "CAP_BPF"}

// requiredCaps are the capabilities cfg needs: NET_ADMIN always (routes,
// links, nftables, tc, net sysctls); BPF and PERFMON for the fast path
// (load programs and maps; the verifier's pointer rules for tc programs).
func requiredCaps(cfg *config.Config) []int {
	caps := []int{capNetAdmin}
	if cfg.FastPathEnabled() {
		caps = append(caps, capBPF, capPerfmon)
	}
	return caps
}

// effectiveCaps reads CapEff from a /proc/<pid>/status file.
func effectiveCaps(statusFile string) (uint64, error) {
	f, err := os.Open(statusFile)
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("parse CapEff %q: %w", v, err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return 0, fmt.Errorf("no CapEff line in %s", statusFile)
}

// missingCaps returns the names of the needed capabilities not in eff.
func missingCaps(eff uint64, need []int) []string {
	var out []string
	for _, c := range need {
		if eff&(1<<uint(c)) == 0 {
			out = append(out, capNames[c])
		}
	}
	return out
}

// checkCaps returns the capabilities cfg needs that the agent lacks.
func checkCaps(cfg *config.Config, statusFile string) ([]string, error) {
	eff, err := effectiveCaps(statusFile)
	if err != nil {
		return nil, err
	}
	return missingCaps(eff, requiredCaps(cfg)), nil
}
