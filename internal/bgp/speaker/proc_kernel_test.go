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
	"github.com/trellisnet/trellis/internal/netnstest"
)

// A network namespace is a property of an OS thread, and GoBGP opens its
// sockets from goroutines on any thread: a speaker therefore runs in a
// process of its own, started inside the node's namespace with
// `ip netns exec` (this test binary again, in helper mode), and driven
// over stdin/stdout with one JSON request and one JSON reply per line.

const helperEnv = "TRELLIS_BGP_SPEAKER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

type request struct {
	Op      string       `json:"op"`
	Desired *bgp.Desired `json:"desired,omitempty"`
	// Passwords carry the neighbours' TCP-MD5 keys by address: bgp.Secret
	// marshals as "<redacted>", so Desired alone would give every
	// neighbour the same key.
	Passwords map[string]string `json:"passwords,omitempty"`
	// WaitMillis: for "wait", how long to wait for a Changes signal.
	WaitMillis int `json:"waitMillis,omitempty"`
}

type reply struct {
	Err     string             `json:"err,omitempty"`
	Peers   []bgp.PeerState    `json:"peers,omitempty"`
	Learned []bgp.LearnedRoute `json:"learned,omitempty"`
	Changed bool               `json:"changed,omitempty"`
}

func helperMain() int {
	lvl := slog.LevelInfo
	if os.Getenv(helperEnv+"_DEBUG") == "1" {
		lvl = slog.Level(-4)
	}
	log := logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	s := New(log)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		var rep reply
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			rep.Err = err.Error()
			_ = out.Encode(rep)
			continue
		}
		switch req.Op {
		case "apply":
			for i, n := range req.Desired.Neighbors {
				req.Desired.Neighbors[i].Password = bgp.Secret(req.Passwords[n.Address.String()])
			}
			if err := s.Apply(context.Background(), *req.Desired); err != nil {
				rep.Err = err.Error()
			}
		case "peers":
			rep.Peers = s.Peers()
		case "learned":
			rep.Learned = s.Learned()
		case "wait":
			select {
			case <-s.Changes():
				rep.Changed = true
			case <-time.After(time.Duration(req.WaitMillis) * time.Millisecond):
			}
		case "stop":
			s.Stop()
			_ = out.Encode(rep)
			return 0
		default:
			rep.Err = "unknown op " + req.Op
		}
		if err := out.Encode(rep); err != nil {
			return 1
		}
	}
	return 0
}

// proc is a speaker running in a node's namespace.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	in   *json.Encoder
	out  *bufio.Scanner
	log  string
	done chan struct{}
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
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	p := &proc{t: t, name: name, cmd: cmd, in: json.NewEncoder(stdin), out: sc, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
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

func (p *proc) call(req request) (reply, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.in.Encode(req); err != nil {
		return reply{}, fmt.Errorf("speaker %s: send %s: %w", p.name, req.Op, err)
	}
	if !p.out.Scan() {
		return reply{}, fmt.Errorf("speaker %s: no reply to %s (exited?): %v", p.name, req.Op, p.out.Err())
	}
	var rep reply
	if err := json.Unmarshal(p.out.Bytes(), &rep); err != nil {
		return reply{}, fmt.Errorf("speaker %s: reply to %s: %w", p.name, req.Op, err)
	}
	return rep, nil
}

func (p *proc) Apply(d bgp.Desired) {
	p.t.Helper()
	pw := map[string]string{}
	for _, n := range d.Neighbors {
		if n.Password != "" {
			pw[n.Address.String()] = string(n.Password)
		}
	}
	rep, err := p.call(request{Op: "apply", Desired: &d, Passwords: pw})
	if err != nil {
		p.t.Fatal(err)
	}
	if rep.Err != "" {
		p.t.Fatalf("speaker %s: Apply: %s", p.name, rep.Err)
	}
}

func (p *proc) Peers() []bgp.PeerState {
	p.t.Helper()
	rep, err := p.call(request{Op: "peers"})
	if err != nil {
		p.t.Fatal(err)
	}
	return rep.Peers
}

func (p *proc) Learned() []bgp.LearnedRoute {
	p.t.Helper()
	rep, err := p.call(request{Op: "learned"})
	if err != nil {
		p.t.Fatal(err)
	}
	return rep.Learned
}

// WaitChange reports whether Changes() was signalled within d.
func (p *proc) WaitChange(d time.Duration) bool {
	p.t.Helper()
	rep, err := p.call(request{Op: "wait", WaitMillis: int(d / time.Millisecond)})
	if err != nil {
		p.t.Fatal(err)
	}
	return rep.Changed
}

// Stop calls Speaker.Stop and waits for the process to end.
func (p *proc) Stop() {
	p.t.Helper()
	if _, err := p.call(request{Op: "stop"}); err != nil {
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
