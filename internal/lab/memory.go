package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
)

// agentNames are the process names of a node's CNI agent: Trellis' own,
// or kube-router in a `--cni kube-router` lab.
var agentNames = map[string]bool{"trellis-agent": true, "kube-router": true}

// IsAgent reports whether a process named comm is a node's CNI agent.
func IsAgent(comm string) bool { return agentNames[comm] }

// AgentMem is the memory of one node's CNI agent processes.
type AgentMem struct {
	Node    string `json:"node"`
	Process string `json:"process"`
	RSSKiB  int64  `json:"rssKiB"`
	PSSKiB  int64  `json:"pssKiB"`
}

// AgentMemory returns, per node, the RSS and PSS of the CNI agent's
// processes (trellis-agent or kube-router) found in the node's cgroups.
func AgentMemory(p state.Paths) (map[string]AgentMem, error) {
	root := filepath.Join(proc.CgroupFS, "pids", p.CgroupRoot())
	out := map[string]AgentMem{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		where := strings.SplitN(rel, "/", 2)[0]
		data, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			name := strings.TrimSpace(string(comm))
			if !IsAgent(name) {
				continue
			}
			m := out[where]
			m.Node, m.Process = where, name
			m.RSSKiB += statusKiB(pid, "VmRSS:")
			m.PSSKiB += rssKiB(pid)
			out[where] = m
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the lab's cgroups: %w", err)
	}
	return out, nil
}

// statusKiB returns a kB field of /proc/PID/status (0 when absent).
func statusKiB(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
