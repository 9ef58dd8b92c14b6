//go:build kernel

package speaker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/bgp/speakerproc"
	"github.com/trellisnet/trellis/internal/netnstest"
)

// A network namespace is a property of an OS thread, and GoBGP opens its
// sockets from goroutines on any thread: a speaker therefore runs in a
// process of its own, started inside the node's namespace with
// `ip netns exec` (this test binary again, in helper mode), and driven
// over stdin/stdout by the agent's protocol (internal/bgp/speakerproc:
// one JSON request and reply per line, event lines for Changes).

const helperEnv = "TRELLIS_BGP_SPEAKER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

func helperMain() int {
	lvl := slog.LevelInfo
	if os.Getenv(helperEnv+"_DEBUG") == "1" {
		lvl = slog.Level(-4)
	}
	log := logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if err := speakerproc.Serve(context.Background(), os.Stdin, os.Stdout, New(log)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// proc is a speaker running in a node's namespace.
type proc struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	mu      sync.Mutex
	in      *json.Encoder
	nextID  uint64
	replies chan speakerproc.Reply
	changed chan struct{}
	log     string
	done    chan struct{}
}

func startSpeaker(t *testing.T, n *netnstest.Node, name string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", n.Name, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start speaker %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, in: json.NewEncoder(stdin), replies: make(chan speakerproc.Reply, 1),
		changed: make(chan struct{}, 1), log: logPath, done: make(chan struct{})}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var rep speakerproc.Reply
			if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
				rep = speakerproc.Reply{Err: fmt.Sprintf("bad reply line %q: %v", sc.Text(), err)}
			}
			if rep.Event == speakerproc.EventChanged {
				select {
				case p.changed <- struct{}{}:
				default:
				}
				continue
			}
			p.replies <- rep
		}
	}()
	go func() { <-readDone; _ = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("speaker %s log (last 6000 bytes):\n%s", name, tail(string(b), 6000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (p *proc) call(req speakerproc.Request) (speakerproc.Reply, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	req.ID = p.nextID
	if err := p.in.Encode(req); err != nil {
		return speakerproc.Reply{}, fmt.Errorf("speaker %s: send %s: %w", p.name, req.Op, err)
	}
	for {
		select {
		case rep := <-p.replies:
			if rep.ID != req.ID && rep.ID != 0 {
				continue // the late reply to an earlier request
			}
			return rep, nil
		case <-p.done:
			return speakerproc.Reply{}, fmt.Errorf("speaker %s: no reply to %s (exited)", p.name, req.Op)
		}
	}
}

func (p *proc) Apply(d bgp.Desired) {
	p.t.Helper()
	rep, err := p.call(speakerproc.NewApply(0, d))
	if err != nil {
		p.t.Fatal(err)
	}
	if rep.Err != "" {
		p.t.Fatalf("speaker %s: Apply: %s", p.name, rep.Err)
	}
}

func (p *proc) Peers() []bgp.PeerState {
	p.t.Helper()
	rep, err := p.call(speakerproc.Request{Op: speakerproc.OpPeers})
	if err != nil {
		p.t.Fatal(err)
	}
	return rep.Peers
}

func (p *proc) Learned() []bgp.LearnedRoute {
	p.t.Helper()
	rep, err := p.call(speakerproc.Request{Op: speakerproc.OpLearned})
	if err != nil {
		p.t.Fatal(err)
	}
	return rep.Learned
}

// WaitChange reports whether Changes() was signalled within d.
func (p *proc) WaitChange(d time.Duration) bool {
	p.t.Helper()
	select {
	case <-p.changed:
		return true
	case <-time.After(d):
		return false
	}
}

// Stop calls Speaker.Stop and waits for the process to end.
func (p *proc) Stop() {
	p.t.Helper()
	if _, err := p.call(speakerproc.Request{Op: speakerproc.OpStop}); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("speaker %s did not exit after Stop", p.name)
	}
}

// RSS is the process's resident set size (VmRSS).
func (p *proc) RSS() string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "?"
}

// Kill ends the process with SIGKILL (by its PID).
func (p *proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// eventually polls cond until it returns "" or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() string) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		if last = cond(); last == "" {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %s", what, timeout, last)
	return 0
}

func peerOf(ps []bgp.PeerState, a string) (bgp.PeerState, bool) {
	for _, p := range ps {
		if p.Address.String() == a {
			return p, true
		}
	}
	return bgp.PeerState{}, false
}

func learnedString(ls []bgp.LearnedRoute) string {
	var b []string
	for _, l := range ls {
		s := fmt.Sprintf("%v via %v from %v", l.Prefix, l.NextHop, l.Neighbor)
		if l.Stale {
			s += " (stale)"
		}
		b = append(b, s)
	}
	return "[" + strings.Join(b, ", ") + "]"
}

// established waits until p's session with addr is Established.
func established(t *testing.T, p *proc, addr string, timeout time.Duration) (bgp.PeerState, time.Duration) {
	t.Helper()
	var st bgp.PeerState
	d := eventually(t, timeout, p.name+": session with "+addr+" established", func() string {
		ps, ok := peerOf(p.Peers(), addr)
		if !ok {
			return "no such neighbour"
		}
		st = ps
		if ps.State != bgp.StateEstablished {
			return fmt.Sprintf("state %s reason %q %q", ps.State, ps.Reason, ps.Message)
		}
		return ""
	})
	return st, d
}
