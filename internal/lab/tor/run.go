package tor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
)

// ProcessName is the ToR's name in the lab's state (and its log file's).
const ProcessName = "tor"

// Dir holds the ToR's rendered configuration and control socket.
func Dir(p state.Paths) string { return filepath.Join(p.Root, "tor") }

// ConfigFile is the rendered BIRD configuration.
func ConfigFile(p state.Paths) string { return filepath.Join(Dir(p), "bird.conf") }

// Socket is BIRD's control socket (birdc -s).
func Socket(p state.Paths) string { return filepath.Join(Dir(p), "bird.ctl") }

// Tools are the commands the ToR needs and their Debian package.
var Tools = map[string]string{"bird": "bird2", "birdc": "bird2"}

// Start renders the configuration for the lab's topology, checks it with
// `bird -p`, runs BIRD in the router namespace as a lab process (in the
// lab's cgroups, recorded in st so `down` stops it by PID) and waits until
// it answers on its control socket.
func Start(ctx context.Context, p state.Paths, st *state.State, labBin string) error {
	c, err := ConfigFor(st.Topology)
	if err != nil {
		return err
	}
	data, err := Render(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(Dir(p), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", Dir(p), err)
	}
	if err := atomicfile.Write(ConfigFile(p), data, 0o644); err != nil {
		return fmt.Errorf("writing the ToR's configuration: %w", err)
	}
	bird, err := exec.LookPath("bird")
	if err != nil {
		return fmt.Errorf("BIRD is not installed (the Debian package bird2, `make deps`): %w", err)
	}
	if err := proc.Run(ctx, bird, "-p", "-c", ConfigFile(p)); err != nil {
		return fmt.Errorf("the ToR's configuration %s does not parse: %w", ConfigFile(p), err)
	}
	argv := []string{bird, "-f", "-c", ConfigFile(p), "-s", Socket(p)}
	group := p.CgroupRoot() + "/" + ProcessName
	log := p.LogFile(ProcessName)
	pid, err := proc.Spawn(labBin, group, st.Topology.RouterNetns, false, log, argv, nil)
	if err != nil {
		return err
	}
	st.SetProcess(state.Process{Name: ProcessName, Group: group, PID: pid, Argv: argv, Netns: st.Topology.RouterNetns, Log: log})
	if err := st.Save(p); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := Birdc(ctx, p, "show", "status")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || !proc.Alive(pid, "bird") {
			return fmt.Errorf("BIRD (the ToR) did not answer on %s (see %s): %w", Socket(p), log, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Birdc runs `birdc -s SOCKET ARGS` against the lab's ToR and returns its
// output.
func Birdc(ctx context.Context, p state.Paths, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "birdc", append([]string{"-s", Socket(p)}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	// birdc exits 0 when it cannot reach the daemon's socket.
	if s := out.String(); strings.Contains(s, "Unable to connect to server") {
		return s, fmt.Errorf("birdc: the ToR does not answer on %s: %s", Socket(p), strings.TrimSpace(s))
	}
	return out.String(), nil
}
