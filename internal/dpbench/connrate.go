package dpbench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// The connection-rate probe: connect, see the server close, close, again
// and again. Which side closes first decides where the connection's
// TIME_WAIT (60 s) stays:
//
//   - The server closes first (the default): the server's socket keeps the
//     TIME_WAIT, and a new SYN for the same four-tuple reopens it, so the
//     probe can go on at any rate.
//   - The client closes first (CloseClientFirst): every connection keeps one
//     of the client's ephemeral ports in TIME_WAIT for 60 s. connect() takes
//     ports of one parity first (the even ones; the odd ones are left to
//     bind), so after half the port range (14,116 connections with the
//     default 32768–60999) every connect() scans the held ports before it
//     finds one, and the rate falls from thousands to a few hundred per
//     second until the first TIME_WAITs expire. Measured that way, a
//     connection rate depends on how many connections the namespace made in
//     the previous minute, not on the path.

// ConnRateOptions tune ConnRateLoop.
type ConnRateOptions struct {
	// Duration of the loop; it stops earlier after Count connections when
	// Count > 0. At least one of them must be set.
	Duration time.Duration
	Count    int
	// DialTimeout bounds each connect (default 1 s).
	DialTimeout time.Duration
	// CloseClientFirst closes the client's socket as soon as connect
	// returns instead of waiting for the server's close: the probe that
	// exhausts ephemeral ports, kept to show the difference.
	CloseClientFirst bool
}

// ConnRate is what ConnRateLoop measured.
type ConnRate struct {
	Connections int           `json:"connections"`
	Elapsed     time.Duration `json:"elapsed"`
	// PerSecond counts the connections completed in each second of the loop
	// (a last second shorter than 0.9 s left out, unless it is the only one).
	PerSecond []int `json:"perSecond"`
	// Connect latencies (connect() call to established).
	ConnectP50 time.Duration `json:"connectP50"`
	ConnectP99 time.Duration `json:"connectP99"`
	ConnectMax time.Duration `json:"connectMax"`
}

// Rate is connections per second over the whole loop.
func (r ConnRate) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Connections) / r.Elapsed.Seconds()
}

// SlowestSecond is the smallest per-second count (0 without one).
func (r ConnRate) SlowestSecond() int {
	if len(r.PerSecond) == 0 {
		return 0
	}
	return slices.Min(r.PerSecond)
}

func (r ConnRate) String() string {
	return fmt.Sprintf("%.0f/s (%d in %s; per second %v; connect p50 %s p99 %s max %s)", r.Rate(), r.Connections,
		r.Elapsed.Round(time.Millisecond), r.PerSecond, r.ConnectP50.Round(time.Microsecond),
		r.ConnectP99.Round(time.Microsecond), r.ConnectMax.Round(time.Microsecond))
}

// ServeCloseFirst accepts connections on ln and closes each at once (the
// server side of the connection-rate probe), until ln is closed.
func ServeCloseFirst(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		_ = c.Close()
	}
}

// ConnRateLoop connects to addr (a ServeCloseFirst server) from the network
// namespace src again and again and counts the connections. Every socket is
// created on one thread inside src; the loop runs there too, so a
// connection costs no namespace switch. Any failed connect is an error:
// a probe that loses connections measures timeouts.
func ConnRateLoop(src Netns, addr string, o ConnRateOptions) (ConnRate, error) {
	if o.Duration <= 0 && o.Count <= 0 {
		return ConnRate{}, errors.New("connection-rate loop: neither a duration nor a count")
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = time.Second
	}
	var r ConnRate
	err := ns.WithNetNSPath(string(src), func(ns.NetNS) error {
		var err error
		r, err = connRateLoop(addr, o)
		return err
	})
	return r, err
}

func connRateLoop(addr string, o ConnRateOptions) (ConnRate, error) {
	d := net.Dialer{Timeout: o.DialTimeout}
	var r ConnRate
	lat := make([]time.Duration, 0, 4096)
	buf := make([]byte, 1)
	start := time.Now()
	second, inSecond := 0, 0
	for {
		elapsed := time.Since(start)
		if (o.Duration > 0 && elapsed >= o.Duration) || (o.Count > 0 && r.Connections >= o.Count) {
			break
		}
		if s := int(elapsed / time.Second); s != second {
			r.PerSecond = append(r.PerSecond, inSecond)
			for second++; second < s; second++ {
				r.PerSecond = append(r.PerSecond, 0)
			}
			inSecond = 0
		}
		t0 := time.Now()
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return r, fmt.Errorf("connect %d to %s after %s: %w", r.Connections+1, addr, time.Since(start).Round(time.Millisecond), err)
		}
		lat = append(lat, time.Since(t0))
		if !o.CloseClientFirst {
			if err := waitClosed(c, buf, o.DialTimeout); err != nil {
				_ = c.Close()
				return r, fmt.Errorf("connection %d to %s: %w", r.Connections+1, addr, err)
			}
		}
		if err := c.Close(); err != nil {
			return r, fmt.Errorf("close connection %d: %w", r.Connections+1, err)
		}
		r.Connections++
		inSecond++
	}
	r.Elapsed = time.Since(start)
	if len(r.PerSecond) == 0 || r.Elapsed-time.Duration(second)*time.Second >= 900*time.Millisecond {
		r.PerSecond = append(r.PerSecond, inSecond)
	}
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		r.ConnectP50, r.ConnectP99, r.ConnectMax = lat[n/2], lat[min(n-1, n*99/100)], lat[n-1]
	}
	return r, nil
}

// waitClosed reads c until the server's close (EOF); a byte or a timeout
// is an error.
func waitClosed(c net.Conn, buf []byte, within time.Duration) error {
	if err := c.SetReadDeadline(time.Now().Add(within)); err != nil {
		return err
	}
	n, err := c.Read(buf)
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("waiting for the server's close: %w", err)
	default:
		return fmt.Errorf("the server sent %d bytes instead of closing", n)
	}
}
