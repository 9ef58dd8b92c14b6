package speakerproc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/trellisnet/trellis/internal/bgp"
)

// maxLine bounds one request line (a Desired with thousands of paths).
const maxLine = 64 << 20

// Serve is the child's side: it answers the requests read from in on out,
// one at a time, and writes an event line whenever s.Changes fires. It
// returns nil when in ends (the agent closed the pipe or died) or after
// a stop request, which calls s.Stop (no NOTIFICATION) and is answered
// before Serve returns; it returns ctx's error when ctx ends.
func Serve(ctx context.Context, in io.Reader, out io.Writer, s bgp.Speaker) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var wmu sync.Mutex
	enc := json.NewEncoder(out)
	write := func(r Reply) error {
		wmu.Lock()
		defer wmu.Unlock()
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("write reply: %w", err)
		}
		return nil
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.Changes():
				if write(Reply{Event: EventChanged}) != nil {
					return
				}
			}
		}
	}()

	lines := make(chan []byte)
	scanErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		for sc.Scan() {
			b := append([]byte(nil), sc.Bytes()...)
			select {
			case lines <- b:
			case <-ctx.Done():
				return
			}
		}
		scanErr <- sc.Err()
		close(lines)
	}()
	for {
		var line []byte
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case line, ok = <-lines:
		}
		if !ok {
			if err := <-scanErr; err != nil {
				return fmt.Errorf("read requests: %w", err)
			}
			return nil
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			if werr := write(Reply{Err: fmt.Sprintf("bad request: %v", err)}); werr != nil {
				return werr
			}
			continue
		}
		rep := Reply{ID: req.ID}
		switch req.Op {
		case OpApply:
			if err := s.Apply(ctx, req.RestorePasswords()); err != nil {
				rep.Err = err.Error()
			}
		case OpPeers:
			rep.Peers = s.Peers()
		case OpLearned:
			rep.Learned = s.Learned()
		case OpStop:
			s.Stop()
			return write(rep)
		default:
			rep.Err = fmt.Sprintf("unknown op %q", req.Op)
		}
		if err := write(rep); err != nil {
			return err
		}
	}
}
