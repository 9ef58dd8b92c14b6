// Package state is a lab's record of itself: its name and the names derived
// from it (directory, cgroup root, netns prefix, API port), the well-known
// paths under its directory, and the state file listing everything it made,
// written before each step so that `down` can remove it after any crash.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// DefaultDir is where the default lab keeps its state, certificates, logs and
// node filesystems; a named lab uses DefaultDir-<name>. TRELLIS_LAB_DIR
// overrides it.
const DefaultDir = "/var/lib/trellis-lab"

// CgroupBase is the cgroup (in every v1 hierarchy) under which every process
// the default lab starts lives: the kernel's own record of what the lab must
// stop. A named lab uses CgroupBase-<name>.
const CgroupBase = "trellis-lab"

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// ValidateName checks a lab instance name ("" is the default lab).
func ValidateName(name string) error {
	if name != "" && !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: use 1-8 lowercase letters or digits", name)
	}
	return nil
}

// Dir returns the state directory of the lab called name.
func Dir(name string) string {
	if d := os.Getenv("TRELLIS_LAB_DIR"); d != "" {
		return d
	}
	if name == "" {
		return DefaultDir
	}
	return DefaultDir + "-" + name
}

// NewPaths returns the paths of the lab called name. Several labs with
// different names run side by side: their namespaces, cgroups, state and API
// ports differ; everything else lives inside their own namespaces.
func NewPaths(name string) Paths { return Paths{Root: Dir(name), Name: name} }

// Paths are the well-known files and names of a lab.
type Paths struct {
	Root string
	Name string
}

// CgroupRoot is the lab's cgroup below every hierarchy's root.
func (p Paths) CgroupRoot() string {
	if p.Name == "" {
		return CgroupBase
	}
	return CgroupBase + "-" + p.Name
}

// NetnsPrefix starts the name of every network namespace of the lab.
func (p Paths) NetnsPrefix() string {
	if p.Name == "" {
		return topology.NetnsPrefix
	}
	return "tl" + p.Name + "-"
}

// DefaultAPIPort is the loopback port of the lab called name.
func DefaultAPIPort(name string) int {
	if name == "" {
		return 16443
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return 16444 + int(h.Sum32()%1000)
}

func (p Paths) State() string           { return filepath.Join(p.Root, "state.json") }
func (p Paths) PKI() string             { return filepath.Join(p.Root, "pki") }
func (p Paths) Logs() string            { return filepath.Join(p.Root, "logs") }
func (p Paths) Bin() string             { return filepath.Join(p.Root, "bin") }
func (p Paths) Kubeconfigs() string     { return filepath.Join(p.Root, "kubeconfig") }
func (p Paths) AdminKubeconfig() string { return filepath.Join(p.Root, "kubeconfig", "admin.conf") }
func (p Paths) Etcd() string            { return filepath.Join(p.Root, "etcd") }
func (p Paths) Node(name string) string { return filepath.Join(p.Root, "nodes", name) }

// PKIFile returns the path of a file of the lab's PKI.
func (p Paths) PKIFile(name string) string { return filepath.Join(p.PKI(), name) }

// KubeconfigFile returns the path of a component kubeconfig.
func (p Paths) KubeconfigFile(name string) string { return filepath.Join(p.Kubeconfigs(), name) }

// LogFile is where a component's output goes.
func (p Paths) LogFile(name string) string {
	return filepath.Join(p.Logs(), strings.ReplaceAll(name, "/", "-")+".log")
}

// Process is one long-running process the lab started.
type Process struct {
	Name  string   `json:"name"`
	Group string   `json:"group"` // cgroup path below the hierarchy roots
	PID   int      `json:"pid"`
	Argv  []string `json:"argv"`
	Netns string   `json:"netns,omitempty"`
	Log   string   `json:"log"`
}

// State is the lab's record of everything it made, written before each step
// so that `down` can remove it even after the lab was killed.
type State struct {
	Topology    topology.Topology `json:"topology"`
	CreatedAt   time.Time         `json:"createdAt"`
	Phase       string            `json:"phase"`
	Netns       []string          `json:"netns"`
	Processes   []Process         `json:"processes"`
	CreatedDirs []string          `json:"createdDirs"` // host directories made as mount points
	Binaries    map[string]string `json:"binaries"`
	AgentError  string            `json:"agentError,omitempty"`
	Install     Install           `json:"install"`
}

// Install records how the lab installed Trellis.
type Install struct {
	// Mode: daemonset, helm or process ("" in state files of labs that
	// predate install modes: process).
	Mode     string `json:"mode,omitempty"`
	Image    string `json:"image,omitempty"`    // reference the DaemonSet runs now
	ImageTar string `json:"imageTar,omitempty"` // tarball of that image
	Manifest string `json:"manifest,omitempty"` // applied manifest (daemonset mode)
}

// AgentPod reports whether kubelet runs the agent as a DaemonSet pod.
func (i Install) AgentPod() bool { return i.Mode == "daemonset" || i.Mode == "helm" }

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
