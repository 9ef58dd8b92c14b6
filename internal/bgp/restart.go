package bgp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// DefaultStateFile records that this node's speaker established a session
// in the current boot (restart detection across agent restarts).
const DefaultStateFile = "/var/lib/trellis/bgp.json"

// kernelProtocol is the route protocol number of learned routes (0x9f,
// "trellis-bgp"; internal/bgp/kernelroutes owns it), for messages.
const kernelProtocol = 159

// stateRecord is the state file's content.
type stateRecord struct {
	// BootID is the kernel's boot id when a session first established.
	BootID        string    `json:"bootID"`
	EstablishedAt time.Time `json:"establishedAt"`
}

// detectRestart decides the Restart State bit (RFC 4724): the agent
// restarted within this boot when its learned routes are still in the
// kernel (they are never flushed on stop, and vanish on reboot), or when
// the state file says a session established in this boot. On a first
// start after boot neither holds: no R bit, so peers do not hold back
// their advertisements waiting for this node's End-of-RIB.
func detectRestart(kernel []KernelRoute, stateFile, bootID string) (bool, string, error) {
	if len(kernel) > 0 {
		return true, fmt.Sprintf("%d BGP routes (protocol %d) survived in the kernel", len(kernel), kernelProtocol), nil
	}
	if bootID == "" || stateFile == "" {
		return false, "first start (boot id unknown)", nil
	}
	data, err := os.ReadFile(stateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, "first start in this boot", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("read BGP state file: %w", err)
	}
	var rec stateRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		// A damaged file is no evidence of a restart.
		return false, "state file unreadable: " + err.Error(), nil
	}
	if rec.BootID != bootID {
		return false, "first start in this boot (state file from an earlier boot)", nil
	}
	return true, "a session established in this boot at " + rec.EstablishedAt.UTC().Format(time.RFC3339), nil
}

// writeState records that a session established now in boot bootID.
func writeState(stateFile, bootID string, now time.Time) error {
	data, err := json.Marshal(stateRecord{BootID: bootID, EstablishedAt: now.UTC()})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(stateFile, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write BGP state file: %w", err)
	}
	return nil
}
