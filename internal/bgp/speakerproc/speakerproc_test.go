package speakerproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/bgp"
)

// fakeSpeaker records what it is given.
type fakeSpeaker struct {
	mu      sync.Mutex
	applied []bgp.Desired
	stopped bool
	err     error
	peers   []bgp.PeerState
	learned []bgp.LearnedRoute
	changes chan struct{}
}

func newFake() *fakeSpeaker { return &fakeSpeaker{changes: make(chan struct{}, 1)} }

func (f *fakeSpeaker) Apply(_ context.Context, d bgp.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, d)
	return f.err
}

func (f *fakeSpeaker) Peers() []bgp.PeerState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers
}

func (f *fakeSpeaker) Learned() []bgp.LearnedRoute {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.learned
}

func (f *fakeSpeaker) Changes() <-chan struct{} { return f.changes }

func (f *fakeSpeaker) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
}

// tee records everything written through it.
type tee struct {
	mu  sync.Mutex
	buf bytes.Buffer
	w   io.Writer
}

func (t *tee) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buf.Write(p)
	t.mu.Unlock()
	return t.w.Write(p)
}

func (t *tee) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}

// inProcess is a Client whose child is Serve(fake) in this process, over
// io.Pipe; toChild and fromChild record the protocol's lines.
type inProcess struct {
	c                  *Client
	fake               *fakeSpeaker
	toChild, fromChild *tee
	served             chan error
	starts             int
}

func newInProcess(t *testing.T) *inProcess {
	t.Helper()
	p := &inProcess{fake: newFake()}
	p.c = New(Config{Timeout: 2 * time.Second, StopTimeout: time.Second})
	p.c.spawn = func() (*conn, error) {
		p.starts++
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		p.toChild = &tee{w: inW}
		p.fromChild = &tee{w: outW}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		p.served = served
		go func() {
			err := Serve(ctx, inR, p.fromChild, p.fake)
			served <- err
			outW.Close()
		}()
		var once sync.Once
		var serveErr error
		wait := func() error {
			once.Do(func() { serveErr = <-served; served <- serveErr })
			return serveErr
		}
		return &conn{stdin: writeCloser{p.toChild, inW}, stdout: outR, wait: wait,
			kill: func() { cancel(); inR.Close() }}, nil
	}
	t.Cleanup(p.c.Stop)
	return p
}

type writeCloser struct {
	io.Writer
	c io.Closer
}

func (w writeCloser) Close() error { return w.c.Close() }

func desired(pw string) bgp.Desired {
	return bgp.Desired{Enabled: true,
		Global: bgp.Global{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1"), ListenPort: -1},
		Neighbors: []bgp.Neighbor{
			{Address: netip.MustParseAddr("10.0.0.254"), ASN: 64500, Password: bgp.Secret(pw)},
			{Address: netip.MustParseAddr("10.0.0.253"), ASN: 64501},
		},
		Paths: []bgp.Path{{Prefix: netip.MustParsePrefix("10.244.1.0/24")}}}
}

func TestApplyPeersLearnedOverThePipe(t *testing.T) {
	p := newInProcess(t)
	if p.c.Peers() != nil || p.starts != 0 {
		t.Fatalf("before Apply: peers %v, %d children started; want none", p.c.Peers(), p.starts)
	}
	const pw = "s3cr3t-md5-key"
	if err := p.c.Apply(context.Background(), desired(pw)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	p.fake.mu.Lock()
	got := p.fake.applied
	p.fake.mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("speaker got %d applies, want 1", len(got))
	}
	if got[0].Neighbors[0].Password != pw || got[0].Neighbors[1].Password != "" {
		t.Errorf("passwords in the child: %q %q, want %q and none", string(got[0].Neighbors[0].Password),
			string(got[0].Neighbors[1].Password), pw)
	}
	if got[0].Global.ASN != 64512 || len(got[0].Paths) != 1 || got[0].Paths[0].Prefix.String() != "10.244.1.0/24" {
		t.Errorf("Desired in the child: %+v", got[0])
	}

	peer := bgp.PeerState{Address: netip.MustParseAddr("10.0.0.254"), ASN: 64500, State: bgp.StateEstablished, Accepted: 3}
	route := bgp.LearnedRoute{Prefix: netip.MustParsePrefix("192.0.2.0/24"), NextHop: netip.MustParseAddr("10.0.0.254"),
		Neighbor: netip.MustParseAddr("10.0.0.254")}
	p.fake.mu.Lock()
	p.fake.peers, p.fake.learned = []bgp.PeerState{peer}, []bgp.LearnedRoute{route}
	p.fake.mu.Unlock()
	if ps := p.c.Peers(); len(ps) != 1 || ps[0].Address != peer.Address || ps[0].State != bgp.StateEstablished || ps[0].Accepted != 3 {
		t.Errorf("Peers: %+v, want [%+v]", ps, peer)
	}
	if ls := p.c.Learned(); len(ls) != 1 || ls[0] != route {
		t.Errorf("Learned: %+v, want [%+v]", ls, route)
	}

	// An error of the speaker comes back as Apply's.
	p.fake.mu.Lock()
	p.fake.err = errors.New("bad neighbour")
	p.fake.mu.Unlock()
	if err := p.c.Apply(context.Background(), desired(pw)); err == nil || !strings.Contains(err.Error(), "bad neighbour") {
		t.Errorf("Apply with a failing speaker: %v, want bad neighbour", err)
	}
	if p.starts != 1 {
		t.Errorf("%d children started, want 1", p.starts)
	}

	// The password travels only in the passwords map, never in Desired,
	// and never comes back.
	for _, line := range strings.Split(strings.TrimSpace(p.toChild.String()), "\n") {
		var req Request
		if err := json.Unmarshal([]byte(line), &req); err != nil {
			t.Fatalf("request line %q: %v", line, err)
		}
		req.Passwords = nil
		b, _ := json.Marshal(req)
		if strings.Contains(string(b), pw) {
			t.Errorf("the password is in a request outside passwords: %s", b)
		}
	}
	if !strings.Contains(p.toChild.String(), `"passwords":{"10.0.0.254":"`+pw+`"}`) {
		t.Errorf("no passwords map in the requests: %s", p.toChild.String())
	}
	if strings.Contains(p.fromChild.String(), pw) {
		t.Errorf("the password is in a reply: %s", p.fromChild.String())
	}
}

func TestChangesEventsReachTheClient(t *testing.T) {
	p := newInProcess(t)
	if err := p.c.Apply(context.Background(), desired("")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.c.Changes():
	default:
	}
	p.fake.changes <- struct{}{}
	select {
	case <-p.c.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("the speaker's Changes did not reach the client")
	}
	if !strings.Contains(p.fromChild.String(), `{"event":"changed"}`) {
		t.Errorf("no event line: %s", p.fromChild.String())
	}
}

func TestDisableForwardsThenStopsTheChild(t *testing.T) {
	p := newInProcess(t)
	if err := p.c.Apply(context.Background(), desired("")); err != nil {
		t.Fatal(err)
	}
	served := p.served
	if err := p.c.Apply(context.Background(), bgp.Desired{}); err != nil {
		t.Fatalf("Apply disabled: %v", err)
	}
	p.fake.mu.Lock()
	n, last, stopped := len(p.fake.applied), p.fake.applied[len(p.fake.applied)-1], p.fake.stopped
	p.fake.mu.Unlock()
	if n != 2 || last.Enabled {
		t.Errorf("speaker got %d applies, the last %+v; want the disabled one forwarded", n, last)
	}
	if !stopped {
		t.Error("the speaker was not stopped")
	}
	select {
	case err := <-served:
		served <- err
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the disable")
	}
	if p.c.Peers() != nil {
		t.Errorf("Peers after the disable: %v", p.c.Peers())
	}
	// Disabled again: nothing to start.
	if err := p.c.Apply(context.Background(), bgp.Desired{}); err != nil || p.starts != 1 {
		t.Errorf("second disable: %v, %d starts; want nil, 1", err, p.starts)
	}
	// Enabled again: a new child.
	if err := p.c.Apply(context.Background(), desired("")); err != nil || p.starts != 2 {
		t.Errorf("re-enable: %v, %d starts; want nil, 2", err, p.starts)
	}
}

func TestDeadChildIsRestartedAndLastValuesKept(t *testing.T) {
	p := newInProcess(t)
	peer := bgp.PeerState{Address: netip.MustParseAddr("10.0.0.254"), State: bgp.StateEstablished}
	p.fake.peers = []bgp.PeerState{peer}
	if err := p.c.Apply(context.Background(), desired("")); err != nil {
		t.Fatal(err)
	}
	if ps := p.c.Peers(); len(ps) != 1 {
		t.Fatalf("Peers: %v", ps)
	}
	p.c.mu.Lock()
	ch := p.c.child
	p.c.mu.Unlock()
	ch.conn.kill() // the child dies
	select {
	case <-ch.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the client did not notice the child's end")
	}
	done := make(chan []bgp.PeerState)
	go func() { done <- p.c.Peers() }()
	select {
	case ps := <-done:
		if len(ps) != 1 || ps[0].Address != peer.Address {
			t.Errorf("Peers of a dead child: %v, want the last known %v", ps, peer)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Peers blocked on a dead child")
	}
	if err := p.c.Apply(context.Background(), desired("")); err != nil {
		t.Fatalf("Apply after the child died: %v", err)
	}
	if p.starts != 2 {
		t.Errorf("%d children started, want 2 (restarted)", p.starts)
	}
}

func TestServeStopAndEOF(t *testing.T) {
	f := newFake()
	var out bytes.Buffer
	err := Serve(context.Background(), strings.NewReader(`{"id":7,"op":"peers"}`+"\n"+`{"id":8,"op":"stop"}`+"\n"+`{"id":9,"op":"peers"}`+"\n"), &out, f)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !f.stopped {
		t.Error("stop did not stop the speaker")
	}
	if got, want := out.String(), "{\"id\":7}\n{\"id\":8}\n"; got != want {
		t.Errorf("replies %q, want %q (nothing after stop)", got, want)
	}
	f = newFake()
	out.Reset()
	if err := Serve(context.Background(), strings.NewReader(`{"id":1,"op":"nope"}`+"\n"), &out, f); err != nil {
		t.Fatalf("Serve to EOF: %v", err)
	}
	if f.stopped || !strings.Contains(out.String(), `unknown op`) {
		t.Errorf("EOF: stopped %v, replies %q; want not stopped, an unknown op error", f.stopped, out.String())
	}
}
