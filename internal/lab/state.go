package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// DefaultDir is where a lab keeps its state, certificates, logs and node
// filesystems. TRELLIS_LAB_DIR overrides it.
const DefaultDir = "/var/lib/trellis-lab"

// CgroupRoot is the cgroup (in every v1 hierarchy) under which every process
// the lab starts lives: the kernel's own record of what the lab must stop.
const CgroupRoot = "trellis-lab"

// Dir returns the lab state directory.
func Dir() string {
	if d := os.Getenv("TRELLIS_LAB_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

// Paths are the well-known files of a lab.
type Paths struct{ Root string }

func (p Paths) State() string           { return filepath.Join(p.Root, "state.json") }
func (p Paths) PKI() string             { return filepath.Join(p.Root, "pki") }
func (p Paths) Logs() string            { return filepath.Join(p.Root, "logs") }
func (p Paths) Bin() string             { return filepath.Join(p.Root, "bin") }
func (p Paths) Kubeconfigs() string     { return filepath.Join(p.Root, "kubeconfig") }
func (p Paths) AdminKubeconfig() string { return filepath.Join(p.Root, "kubeconfig", "admin.conf") }
func (p Paths) Etcd() string            { return filepath.Join(p.Root, "etcd") }
func (p Paths) Node(name string) string { return filepath.Join(p.Root, "nodes", name) }

// Process is one long-running process the lab started.
type Process struct {
	Name  string   `json:"name"`
	Group string   `json:"group"` // cgroup below CgroupRoot
	PID   int      `json:"pid"`
	Argv  []string `json:"argv"`
	Netns string   `json:"netns,omitempty"`
	Log   string   `json:"log"`
}

// State is the lab's record of everything it made, written before each step
// so that `down` can remove it even after the lab was killed.
type State struct {
	Topology    Topology          `json:"topology"`
	CreatedAt   time.Time         `json:"createdAt"`
	Phase       string            `json:"phase"`
	Netns       []string          `json:"netns"`
	Processes   []Process         `json:"processes"`
	CreatedDirs []string          `json:"createdDirs"` // host directories made as mount points
	Binaries    map[string]string `json:"binaries"`
	AgentError  string            `json:"agentError,omitempty"`
}

// LoadState reads the state file; os.ErrNotExist when there is no lab.
func LoadState(p Paths) (*State, error) {
	data, err := os.ReadFile(p.State())
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", p.State(), err)
	}
	return &s, nil
}

// Save writes the state atomically.
func (s *State) Save(p Paths) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding lab state: %w", err)
	}
	if err := os.MkdirAll(p.Root, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", p.Root, err)
	}
	if err := atomicfile.Write(p.State(), data, 0o644); err != nil {
		return fmt.Errorf("writing lab state: %w", err)
	}
	return nil
}

// Process returns the recorded process called name.
func (s *State) Process(name string) (*Process, bool) {
	for i := range s.Processes {
		if s.Processes[i].Name == name {
			return &s.Processes[i], true
		}
	}
	return nil, false
}

// SetProcess records (or replaces) a process.
func (s *State) SetProcess(pr Process) {
	for i := range s.Processes {
		if s.Processes[i].Name == pr.Name {
			s.Processes[i] = pr
			return
		}
	}
	s.Processes = append(s.Processes, pr)
}

// Exists reports whether a state file (a running or crashed lab) is present.
func Exists(p Paths) bool {
	_, err := os.Stat(p.State())
	return !errors.Is(err, fs.ErrNotExist)
}
