package podlink

// The node state file: the hand-off from the Trellis agent (writer) to the
// CNI plugin (reader) on one node. The agent writes it atomically; the
// plugin reads it on every call that needs the node's pod subnets (ADD when
// ipam.subnets is absent) or readiness (STATUS).

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// DefaultNodeStatePath is where the agent writes, and the plugin reads, the file.
const DefaultNodeStatePath = "/var/lib/trellis/node-state.json"

// NodeStateVersion is the schema version written by this build.
const NodeStateVersion = 1

// NodeState is the content of the node state file.
type NodeState struct {
	// Version of the schema; readers refuse versions they do not know.
	Version int `json:"version"`
	// NodeName is the Kubernetes Node this file describes.
	NodeName string `json:"nodeName,omitempty"`
	// PodCIDRs are the node's pod subnets (Node.spec.podCIDRs), one per family.
	PodCIDRs []netip.Prefix `json:"podCIDRs"`
	// MTU for pod interfaces, when the agent computed one (0: use the conflist's).
	MTU int `json:"mtu,omitempty"`
	// Ready is true once the agent has programmed this node's routes.
	Ready bool `json:"ready"`
	// Reason explains Ready=false for operators (shown by CNI STATUS).
	Reason string `json:"reason,omitempty"`
	// Dataplane is present while the agent's base dataplane (the policy
	// and anti-spoofing tables) is in place, programmed during the boot it
	// names; absent otherwise. A plugin configured with requireDataplane
	// wires pods only while it is present, from this boot, and its tables
	// exist.
	Dataplane *Dataplane `json:"dataplane,omitempty"`
	// UpdatedAt is when the agent last wrote the file.
	UpdatedAt time.Time `json:"updatedAt"`
}

// Dataplane is the agent's statement that this node's base dataplane is in place.
type Dataplane struct {
	// BootID is the kernel's boot id (BootIDPath) when the agent programmed it.
	BootID string `json:"bootID"`
	// Tables are the nftables tables that must exist for it to be in place.
	Tables []NFTable `json:"nftTables,omitempty"`
}

// NFTable names an nftables table.
type NFTable struct {
	Family string `json:"family"`
	Name   string `json:"name"`
}

func (t NFTable) String() string { return t.Family + " " + t.Name }

// BootIDPath holds the kernel's random id of the current boot.
const BootIDPath = "/proc/sys/kernel/random/boot_id"

// BootID returns the current boot's id (BootIDPath, trimmed).
func BootID() (string, error) {
	b, err := os.ReadFile(BootIDPath)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// ErrNoNodeState is returned (wrapped) by ReadNodeState when the file is absent.
var ErrNoNodeState = errors.New("node state file does not exist")

// ReadNodeState loads and validates the state file at path.
func ReadNodeState(path string) (*NodeState, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoNodeState, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read node state file: %w", err)
	}
	var s NodeState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse node state file %s: %w", path, err)
	}
	if s.Version != NodeStateVersion {
		return nil, fmt.Errorf("node state file %s has version %d, this build reads version %d", path, s.Version, NodeStateVersion)
	}
	for _, p := range s.PodCIDRs {
		if !p.IsValid() {
			return nil, fmt.Errorf("node state file %s: invalid pod CIDR", path)
		}
	}
	return &s, nil
}

// WriteNodeState stores s at path atomically (readers see the old or the new file).
func WriteNodeState(path string, s *NodeState) error {
	c := *s
	c.Version = NodeStateVersion
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = time.Now().UTC()
	}
	data, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode node state: %w", err)
	}
	return atomicfile.Write(path, append(data, '\n'), 0o644)
}
