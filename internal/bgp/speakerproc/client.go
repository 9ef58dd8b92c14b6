package speakerproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/trellisnet/trellis/internal/bgp"
)

// Executable is the child's file name, beside the agent's executable.
const Executable = "trellis-bgp"

// Defaults of Config.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultStopTimeout = 2 * time.Second
)

// Config is a Client's.
type Config struct {
	// Path of the trellis-bgp executable ("": Executable beside
	// os.Executable()).
	Path string
	// Timeout of one request (0: DefaultTimeout).
	Timeout time.Duration
	// StopTimeout: how long Stop waits for the child to exit before it
	// kills it (0: DefaultStopTimeout).
	StopTimeout time.Duration
	// Stderr receives the child's log (nil: os.Stderr).
	Stderr io.Writer
	Log    logr.Logger
}

// conn is a running child as the client sees it.
type conn struct {
	stdin  io.WriteCloser
	stdout io.Reader
	// wait returns when the child ended, with its exit error.
	wait func() error
	kill func()
}

// Client is a bgp.Speaker whose speaker runs in a child process
// (Serve in trellis-bgp), started on the first Apply with Enabled and
// stopped by an Apply without. Safe for concurrent use.
type Client struct {
	cfg     Config
	spawn   func() (*conn, error)
	changes chan struct{}

	// applyMu serialises Apply and Stop (starting and stopping children).
	applyMu sync.Mutex

	mu          sync.Mutex
	child       *child
	lastPeers   []bgp.PeerState
	lastLearned []bgp.LearnedRoute
}

var _ bgp.Speaker = (*Client)(nil)

// New returns a Client; no process starts before Apply.
func New(cfg Config) *Client {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	c := &Client{cfg: cfg, changes: make(chan struct{}, 1)}
	c.spawn = c.exec
	return c
}

// exec starts the trellis-bgp executable. Pdeathsig kills it with the
// agent: a killed agent closes the sessions without NOTIFICATION, which the
// peers' graceful restart covers. (Pdeathsig fires when the starting OS
// thread ends; Go ends a thread only under a goroutine that exits while
// locked to it, which Apply's caller is not.)
func (c *Client) exec() (*conn, error) {
	path := c.cfg.Path
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the BGP speaker beside the agent: %w", err)
		}
		path = filepath.Join(filepath.Dir(self), Executable)
	}
	cmd := exec.Command(path)
	cmd.Stderr = c.cfg.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("BGP speaker %s: %w", path, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("BGP speaker %s: %w", path, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the BGP speaker %s: %w", path, err)
	}
	return &conn{stdin: stdin, stdout: stdout, wait: cmd.Wait,
		kill: func() { _ = cmd.Process.Kill() }}, nil
}

// child is one running speaker process.
type child struct {
	conn *conn
	wmu  sync.Mutex
	enc  *json.Encoder

	pmu     sync.Mutex
	nextID  uint64
	pending map[uint64]chan Reply

	done    chan struct{}
	exitErr error // set before done closes
}

func (c *Client) start() (*child, error) {
	cn, err := c.spawn()
	if err != nil {
		return nil, err
	}
	ch := &child{conn: cn, enc: json.NewEncoder(cn.stdin), pending: map[uint64]chan Reply{}, done: make(chan struct{})}
	go c.read(ch)
	return ch, nil
}

// read delivers ch's replies and events until its stdout ends, then reaps it.
func (c *Client) read(ch *child) {
	sc := bufio.NewScanner(ch.conn.stdout)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		var r Reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			c.cfg.Log.Error(err, "BGP speaker: bad reply line")
			continue
		}
		if r.Event == EventChanged {
			c.signal()
			continue
		}
		ch.pmu.Lock()
		w := ch.pending[r.ID]
		delete(ch.pending, r.ID)
		ch.pmu.Unlock()
		if w != nil {
			w <- r
		}
	}
	err := ch.conn.wait()
	if err == nil {
		err = errors.New("exited")
	}
	ch.exitErr = err
	close(ch.done)
	c.signal()
}

func (c *Client) signal() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// call sends req to ch and waits for its reply.
func (c *Client) call(ctx context.Context, ch *child, req Request, timeout time.Duration) (Reply, error) {
	w := make(chan Reply, 1)
	ch.pmu.Lock()
	ch.nextID++
	req.ID = ch.nextID
	ch.pending[req.ID] = w
	ch.pmu.Unlock()
	defer func() {
		ch.pmu.Lock()
		delete(ch.pending, req.ID)
		ch.pmu.Unlock()
	}()
	ch.wmu.Lock()
	err := ch.enc.Encode(req)
	ch.wmu.Unlock()
	if err != nil {
		return Reply{}, fmt.Errorf("BGP speaker: send %s: %w", req.Op, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-w:
		if r.Err != "" {
			return r, errors.New(r.Err)
		}
		return r, nil
	case <-ch.done:
		return Reply{}, fmt.Errorf("BGP speaker: no reply to %s: %w", req.Op, ch.exitErr)
	case <-t.C:
		return Reply{}, fmt.Errorf("BGP speaker: no reply to %s within %v", req.Op, timeout)
	case <-ctx.Done():
		return Reply{}, fmt.Errorf("BGP speaker: %s: %w", req.Op, ctx.Err())
	}
}

func (ch *child) alive() bool {
	select {
	case <-ch.done:
		return false
	default:
		return true
	}
}

// Apply forwards d to the child, starting it first when d.Enabled and
// none runs (a child that died is restarted, its end logged). Without
// d.Enabled it forwards d (the speaker sends its NOTIFICATIONs) and then
// stops the child.
func (c *Client) Apply(ctx context.Context, d bgp.Desired) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	ch := c.child
	c.mu.Unlock()
	if ch != nil && !ch.alive() {
		c.cfg.Log.Error(ch.exitErr, "BGP speaker process ended; restarting it")
		c.setChild(nil)
		ch = nil
	}
	if !d.Enabled {
		if ch == nil {
			c.clearLast()
			return nil
		}
		_, err := c.call(ctx, ch, NewApply(0, d), c.cfg.Timeout)
		c.stop(ch)
		c.clearLast()
		if err != nil {
			return fmt.Errorf("disable BGP: %w", err)
		}
		return nil
	}
	if ch == nil {
		var err error
		if ch, err = c.start(); err != nil {
			return err
		}
		c.setChild(ch)
	}
	if _, err := c.call(ctx, ch, NewApply(0, d), c.cfg.Timeout); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	return nil
}

func (c *Client) setChild(ch *child) {
	c.mu.Lock()
	c.child = ch
	c.mu.Unlock()
}

func (c *Client) clearLast() {
	c.mu.Lock()
	c.lastPeers, c.lastLearned = nil, nil
	c.mu.Unlock()
}

// stop asks ch to stop (no NOTIFICATION), waits StopTimeout for it to
// exit, then kills it.
func (c *Client) stop(ch *child) {
	if ch.alive() {
		_, _ = c.call(context.Background(), ch, Request{Op: OpStop}, c.cfg.StopTimeout)
	}
	_ = ch.conn.stdin.Close()
	t := time.NewTimer(c.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-ch.done:
	case <-t.C:
		ch.conn.kill()
		<-ch.done
	}
	c.mu.Lock()
	if c.child == ch {
		c.child = nil
	}
	c.mu.Unlock()
}

// Peers asks the child; without one answering, it is the last answer.
func (c *Client) Peers() []bgp.PeerState {
	c.mu.Lock()
	ch := c.child
	last := c.lastPeers
	c.mu.Unlock()
	if ch == nil || !ch.alive() {
		return last
	}
	r, err := c.call(context.Background(), ch, Request{Op: OpPeers}, c.cfg.Timeout)
	if err != nil {
		c.cfg.Log.Error(err, "BGP speaker: peers")
		return last
	}
	c.mu.Lock()
	c.lastPeers = r.Peers
	c.mu.Unlock()
	return r.Peers
}

// Learned asks the child; without one answering, it is the last answer.
func (c *Client) Learned() []bgp.LearnedRoute {
	c.mu.Lock()
	ch := c.child
	last := c.lastLearned
	c.mu.Unlock()
	if ch == nil || !ch.alive() {
		return last
	}
	r, err := c.call(context.Background(), ch, Request{Op: OpLearned}, c.cfg.Timeout)
	if err != nil {
		c.cfg.Log.Error(err, "BGP speaker: learned")
		return last
	}
	c.mu.Lock()
	c.lastLearned = r.Learned
	c.mu.Unlock()
	return r.Learned
}

// Changes is signalled on every event line of the child and when it ends.
func (c *Client) Changes() <-chan struct{} { return c.changes }

// Stop stops the child without NOTIFICATION: stop, then at most
// StopTimeout, then SIGKILL.
func (c *Client) Stop() {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	ch := c.child
	c.mu.Unlock()
	if ch != nil {
		c.stop(ch)
	}
}
