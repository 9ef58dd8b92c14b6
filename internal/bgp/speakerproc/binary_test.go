package speakerproc

import (
	"bytes"
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/bgp"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The real trellis-bgp, started by the Client: a speaker without listener
// and neighbours starts, answers, and exits on the disable.
func TestRealChildProcess(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build trellis-bgp: %v", err)
	}
	bin := filepath.Join(t.TempDir(), Executable)
	build := exec.Command(goTool, "build", "-o", bin, "../../../cmd/trellis-bgp")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build trellis-bgp: %v\n%s", err, out)
	}
	var logs lockedBuffer
	c := New(Config{Path: bin, Stderr: &logs})
	defer c.Stop()
	d := bgp.Desired{Enabled: true, Global: bgp.Global{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1"), ListenPort: -1}}
	if err := c.Apply(context.Background(), d); err != nil {
		t.Fatalf("Apply: %v\nchild log:\n%s", err, logs.String())
	}
	c.mu.Lock()
	ch := c.child
	c.mu.Unlock()
	if ch == nil || !ch.alive() {
		t.Fatal("no child running after an enabled Apply")
	}
	if ps := c.Peers(); len(ps) != 0 {
		t.Errorf("Peers: %v, want none", ps)
	}
	if ls := c.Learned(); len(ls) != 0 {
		t.Errorf("Learned: %v, want none", ls)
	}
	if err := c.Apply(context.Background(), bgp.Desired{}); err != nil {
		t.Fatalf("Apply disabled: %v\nchild log:\n%s", err, logs.String())
	}
	select {
	case <-ch.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the child did not exit after the disable")
	}
	if ch.exitErr == nil || ch.exitErr.Error() != "exited" {
		t.Errorf("child exit: %v, want a clean exit\nchild log:\n%s", ch.exitErr, logs.String())
	}
}
