// Package capture records the lab's underlay with tcpdump and reads what it
// recorded: Start runs tcpdump inside one of the lab's network namespaces
// (the switch, whose bridges carry every frame between the lab's hosts),
// bounded by a packet count and a duration, writing a pcap file; Analyze
// counts a known payload and the UDP datagrams to a port in such a file.
// The encryption e2e tests use it to prove that no plaintext pod packet
// crosses the switch while WireGuard datagrams do.
//
// tcpdump runs in the lab's namespace only (nsenter --net), and is stopped
// by its own PID.
package capture

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options bound one capture.
type Options struct {
	// Netns is the name of the network namespace (/run/netns/NAME) to
	// capture in.
	Netns string
	// Interface is the interface to capture on; "any" (the default) takes
	// every interface of the namespace.
	Interface string
	// InboundOnly records each frame once, as it enters the namespace
	// (tcpdump -Q in): on the switch that is the port it came from, so a
	// frame bridged from one port to another is not recorded twice.
	InboundOnly bool
	// Filter is a pcap filter expression ("" records everything).
	Filter string
	// File is the pcap file to write.
	File string
	// MaxPackets stops tcpdump after this many frames (required).
	MaxPackets int
	// MaxDuration stops tcpdump after this long (required).
	MaxDuration time.Duration
	// SnapLen is the bytes recorded per frame (0: the whole frame).
	SnapLen int
	// BufferKiB is the kernel's capture buffer (tcpdump -B; 0:
	// DefaultBufferKiB). Frames arrive in it as the stack holds them: on
	// veths with segmentation offload, up to 64 KiB each.
	BufferKiB int
}

// DefaultBufferKiB holds 1,000 frames of 64 KiB: tcpdump's own default
// (2 MiB, 32 such frames) overflows while a busy machine schedules it late.
const DefaultBufferKiB = 64 << 10

// Validate returns every problem with o, joined.
func (o Options) Validate() error {
	var errs []error
	if o.Netns == "" || strings.ContainsAny(o.Netns, "/ ") {
		errs = append(errs, fmt.Errorf("capture: network namespace name %q is not a name under /run/netns", o.Netns))
	}
	if o.File == "" {
		errs = append(errs, errors.New("capture: no output file"))
	}
	if o.MaxPackets <= 0 {
		errs = append(errs, fmt.Errorf("capture: the packet count must be positive, got %d", o.MaxPackets))
	}
	if o.MaxDuration <= 0 {
		errs = append(errs, fmt.Errorf("capture: the duration must be positive, got %s", o.MaxDuration))
	}
	if o.BufferKiB < 0 {
		errs = append(errs, fmt.Errorf("capture: buffer size %d KiB is negative", o.BufferKiB))
	}
	if o.SnapLen < 0 {
		errs = append(errs, fmt.Errorf("capture: snap length %d is negative", o.SnapLen))
	}
	return errors.Join(errs...)
}

// Args is tcpdump's command line for o (after nsenter's).
func (o Options) Args() []string {
	iface := o.Interface
	if iface == "" {
		iface = "any"
	}
	// -n: no name lookups; --immediate-mode and -U: take each packet from
	// the kernel and write it to the file as it arrives, so that a file read
	// after SIGTERM holds every packet tcpdump received (with the default
	// buffering, the last second's packets are still in the kernel's ring
	// when tcpdump stops); -s 0: whole frames.
	buf := o.BufferKiB
	if buf == 0 {
		buf = DefaultBufferKiB
	}
	args := []string{"-i", iface, "-n", "--immediate-mode", "-U", "-B", strconv.Itoa(buf), "-s", strconv.Itoa(o.SnapLen),
		"-c", strconv.Itoa(o.MaxPackets), "-w", o.File}
	if o.InboundOnly {
		args = append(args, "-Q", "in")
	}
	if o.Filter != "" {
		args = append(args, o.Filter)
	}
	return args
}

// Capture is a running tcpdump.
type Capture struct {
	opts    Options
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	timer   *time.Timer

	mu        sync.Mutex
	stderr    strings.Builder
	listening chan struct{}
	heard     bool
}

// Stats is what tcpdump reported when it stopped.
type Stats struct {
	Captured, ReceivedByFilter, DroppedByKernel int
	// LimitReached: tcpdump stopped at MaxPackets (later frames are not in the file).
	LimitReached bool
	// TimedOut: the capture ran into MaxDuration.
	TimedOut bool
}

// Start runs tcpdump in o.Netns and returns once it is recording (it has
// opened the interface), or an error naming tcpdump's message.
func Start(ctx context.Context, o Options) (*Capture, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		return nil, fmt.Errorf("capture: tcpdump not found: install the Debian package tcpdump (make deps): %w", err)
	}
	// nsenter execs tcpdump in place: the PID is tcpdump's.
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + o.Netns, "--", bin}, o.Args()...)...)
	listening := make(chan struct{})
	c := &Capture{opts: o, cmd: cmd, done: make(chan struct{}), listening: listening}
	// Wait returns only once everything tcpdump wrote to stderr (its
	// statistics come last) has gone through c.Write.
	cmd.Stderr = c
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("capture: starting tcpdump in %s: %w", o.Netns, err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	c.timer = time.AfterFunc(o.MaxDuration, func() { c.signal(syscall.SIGTERM) })
	select {
	case <-listening:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("capture: tcpdump in %s exited before it was recording: %v: %s", o.Netns, c.waitErr, c.output())
	case <-ctx.Done():
		_, _ = c.Stop()
		return nil, fmt.Errorf("capture: waiting for tcpdump in %s to record: %w", o.Netns, ctx.Err())
	case <-time.After(10 * time.Second):
		_, _ = c.Stop()
		return nil, fmt.Errorf("capture: tcpdump in %s did not start recording within 10s: %s", o.Netns, c.output())
	}
}

// Write keeps tcpdump's messages (its stderr) and closes c.listening once
// its "listening on" line has arrived.
func (c *Capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stderr.Write(p)
	if !c.heard && strings.Contains(c.stderr.String(), "listening on ") {
		c.heard = true
		close(c.listening)
	}
	return len(p), nil
}

func (c *Capture) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(c.stderr.String())
}

// signal sends sig to tcpdump by its PID, unless it has exited.
func (c *Capture) signal(sig syscall.Signal) {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(sig)
	}
}

// PID is tcpdump's process ID.
func (c *Capture) PID() int { return c.cmd.Process.Pid }

// Done is closed when tcpdump has exited (its packet count or duration
// reached, or stopped).
func (c *Capture) Done() <-chan struct{} { return c.done }

// File is the pcap file being written.
func (c *Capture) File() string { return c.opts.File }

// Stop ends the capture (SIGTERM to tcpdump's PID, SIGKILL after 5 s),
// waits for it and returns its statistics. Stopping twice is fine.
func (c *Capture) Stop() (Stats, error) {
	timedOut := !c.timer.Stop()
	c.signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.signal(syscall.SIGKILL)
		<-c.done
	}
	st, err := parseStats(c.output())
	if err != nil {
		return st, fmt.Errorf("capture: %w", err)
	}
	st.LimitReached = st.Captured >= c.opts.MaxPackets
	st.TimedOut = timedOut && !st.LimitReached
	return st, nil
}

var statsRE = regexp.MustCompile(`(?m)^(\d+) packets? (captured|received by filter|dropped by kernel)$`)

// parseStats reads the summary tcpdump prints on exit.
func parseStats(out string) (Stats, error) {
	var st Stats
	found := 0
	for _, m := range statsRE.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		found++
		switch m[2] {
		case "captured":
			st.Captured = n
		case "received by filter":
			st.ReceivedByFilter = n
		case "dropped by kernel":
			st.DroppedByKernel = n
		}
	}
	if found == 0 {
		return st, fmt.Errorf("tcpdump printed no statistics: %s", out)
	}
	return st, nil
}
