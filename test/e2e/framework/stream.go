//go:build e2e

package framework

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Stream is a TCP byte stream and a UDP datagram stream from pod a to pod b,
// run by the test process inside the pods' network namespaces: the TCP
// stream carries a counting pattern the reader verifies, the UDP stream
// 500 numbered datagrams per second.
type Stream struct {
	tcpSent, tcpRecv atomic.Int64
	udpSent, udpRecv atomic.Int64
	retrans          atomic.Int64 // the TCP sender's retransmitted segments, at its end
	udpLast, udpGap  atomic.Int64 // the last sequence number received, the longest run lost
	tcpErr           error
	stop             chan struct{}
	wg               sync.WaitGroup
	mu               sync.Mutex
}

// StartStream starts a stream from pod a to pod b (NS/POD), TCP to port and
// UDP to port+1 on b.
func (l *Lab) StartStream(t testing.TB, a, b string, port int) *Stream {
	t.Helper()
	return StartStreamNetns(t, a+" -> "+b, l.PodNetns(t, a), l.PodNetns(t, b), l.Pod(t, b).Status.PodIP, port)
}

// StartStreamNetns is StartStream between any two network namespaces
// (paths such as /run/netns/NAME or a pod's): the sender in pa, the
// receiver in pb listening on ipB (TCP port, UDP port+1). what names the
// stream in errors.
func StartStreamNetns(t testing.TB, what, pa, pb, ipB string, port int) *Stream {
	t.Helper()
	s := &Stream{stop: make(chan struct{})}
	tcpPort, udpPort := strconv.Itoa(port), strconv.Itoa(port+1)
	var ln net.Listener
	var udpIn *net.UDPConn
	InNetns(t, pb, func() error {
		var err error
		if ln, err = net.Listen("tcp4", net.JoinHostPort(ipB, tcpPort)); err != nil {
			return err
		}
		udpIn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ipB), Port: port + 1})
		return err
	})
	conn, err := topology.DialInNetns(pa, "tcp", net.JoinHostPort(ipB, tcpPort), 5*time.Second)
	if err != nil {
		t.Fatalf("TCP stream %s: %v", what, err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	udpOut, err := topology.DialInNetns(pa, "udp", net.JoinHostPort(ipB, udpPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(dst *error, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if *dst == nil {
			*dst = err
		}
	}
	s.wg.Add(4)
	go func() { // TCP writer: ~4 MB/s of a counting pattern
		defer s.wg.Done()
		defer func() {
			s.retrans.Store(totalRetrans(conn))
			conn.Close()
		}()
		buf := make([]byte, 4096)
		var off int64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			for i := range buf {
				buf[i] = byte(off + int64(i))
			}
			n, err := conn.Write(buf)
			off += int64(n)
			s.tcpSent.Store(off)
			if err != nil {
				fail(&s.tcpErr, fmt.Errorf("TCP write after %d bytes: %w", off, err))
				return
			}
		}
	}()
	go func() { // TCP reader: verifies the pattern
		defer s.wg.Done()
		defer srv.Close()
		buf := make([]byte, 65536)
		var off int64
		for {
			n, err := srv.Read(buf)
			for i := 0; i < n; i++ {
				if buf[i] != byte(off+int64(i)) {
					fail(&s.tcpErr, fmt.Errorf("TCP stream corrupted at byte %d", off+int64(i)))
					return
				}
			}
			off += int64(n)
			s.tcpRecv.Store(off)
			if err == io.EOF {
				return
			}
			if err != nil {
				fail(&s.tcpErr, fmt.Errorf("TCP read after %d bytes: %w", off, err))
				return
			}
		}
	}()
	go func() { // UDP sender: 500 datagrams/s with sequence numbers
		defer s.wg.Done()
		defer udpOut.Close()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		msg := make([]byte, 64)
		for seq := uint64(0); ; seq++ {
			select {
			case <-s.stop:
				// Let the last datagrams arrive before the receiver stops.
				time.Sleep(300 * time.Millisecond)
				udpIn.Close()
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(msg, seq)
			// A datagram the kernel refused to send (no route, no
			// neighbour) is lost as surely as one dropped on the way.
			s.udpSent.Add(1)
			_, _ = udpOut.Write(msg)
		}
	}()
	go func() { // UDP receiver
		defer s.wg.Done()
		buf := make([]byte, 128)
		s.udpLast.Store(-1)
		for {
			n, err := udpIn.Read(buf)
			if err != nil {
				return
			}
			s.udpRecv.Add(1)
			if n >= 8 {
				seq := int64(binary.BigEndian.Uint64(buf))
				if gap := seq - s.udpLast.Load() - 1; gap > s.udpGap.Load() {
					s.udpGap.Store(gap)
				}
				if seq > s.udpLast.Load() {
					s.udpLast.Store(seq)
				}
			}
		}
	}()
	return s
}

// StreamResult is what a stream measured.
type StreamResult struct {
	TCPSent, TCPReceived int64
	// TCPErr is the first TCP error (a reset, a corrupted byte), or nil.
	TCPErr error
	// Retransmits is the TCP sender's retransmitted segments (-1 unknown).
	Retransmits          int64
	UDPSent, UDPReceived int64
	// UDPLoss is the share of datagrams lost, in percent.
	UDPLoss float64
	// UDPMaxGap is the longest run of datagrams lost in a row (one is sent
	// every 2 ms: the longest outage is about 2 ms times this).
	UDPMaxGap int64
}

// Stop stops the stream and returns what it measured, asserting nothing
// but that it stopped.
func (s *Stream) Stop(t testing.TB, what string) StreamResult {
	t.Helper()
	close(s.stop)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: stream did not finish", what)
	}
	r := StreamResult{TCPSent: s.tcpSent.Load(), TCPReceived: s.tcpRecv.Load(), TCPErr: s.tcpErr,
		Retransmits: s.retrans.Load(), UDPSent: s.udpSent.Load(), UDPReceived: s.udpRecv.Load(), UDPMaxGap: s.udpGap.Load()}
	if last := s.udpLast.Load(); r.UDPSent-1-last > r.UDPMaxGap { // datagrams lost at the end
		r.UDPMaxGap = r.UDPSent - 1 - last
	}
	r.UDPLoss = 100 * float64(r.UDPSent-r.UDPReceived) / float64(max(r.UDPSent, 1))
	return r
}

// minDatagrams is the fewest UDP datagrams Finish measures a loss over.
const minDatagrams = 1000

// WaitDatagrams waits until the stream has sent at least n UDP datagrams.
// A stream sends one every 2 ms, but a loaded machine misses ticks: a test
// that needs a sample of a given size waits for it rather than sleeping.
func (s *Stream) WaitDatagrams(t testing.TB, n int64, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for s.udpSent.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the stream sent %d UDP datagrams in %s, want %d", s.udpSent.Load(), limit, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Finish stops the stream and checks: no TCP error or reset, every byte
// delivered, UDP loss under 1%. It returns the UDP loss in percent and
// whether the TCP stream failed (an error or reset).
func (s *Stream) Finish(t testing.TB, what string) (loss float64, tcpFailed bool) {
	t.Helper()
	r := s.Stop(t, what)
	if r.TCPErr != nil {
		t.Errorf("%s: %v", what, r.TCPErr)
	}
	if r.TCPReceived != r.TCPSent {
		t.Errorf("%s: TCP received %d of %d bytes", what, r.TCPReceived, r.TCPSent)
	}
	t.Logf("%s: TCP %d bytes intact, %d segments retransmitted; UDP %d/%d datagrams (%.2f%% loss)", what, r.TCPReceived,
		r.Retransmits, r.UDPReceived, r.UDPSent, r.UDPLoss)
	switch {
	case r.UDPSent < minDatagrams:
		t.Errorf("%s: only %d UDP datagrams sent, too few to measure a 1%% loss (want at least %d: run the stream longer, "+
			"or wait with WaitDatagrams)", what, r.UDPSent, minDatagrams)
	case r.UDPLoss >= 1:
		t.Errorf("%s: UDP %d/%d datagrams arrived (%.2f%% loss), want under 1%%", what, r.UDPReceived, r.UDPSent, r.UDPLoss)
	}
	return r.UDPLoss, r.TCPErr != nil || r.TCPReceived != r.TCPSent
}

// totalRetrans reads tcpi_total_retrans of a TCP connection (-1 if unknown).
func totalRetrans(c net.Conn) int64 {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return -1
	}
	n := int64(-1)
	_ = raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = int64(info.Total_retrans)
		}
	})
	return n
}

// Pod returns the pod NS/POD.
func (l *Lab) Pod(t testing.TB, ref string) *corev1.Pod {
	t.Helper()
	nsName, name, err := connectivity.SplitPodRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.CS.CoreV1().Pods(nsName).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// PodNetns returns the netns path of a running pod.
func (l *Lab) PodNetns(t testing.TB, ref string) string {
	t.Helper()
	p, err := probe.PodNetns(l.Pod(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// InNetns runs f with the calling goroutine in the namespace at path;
// sockets created inside stay in that namespace.
func InNetns(t testing.TB, path string, f func() error) {
	t.Helper()
	if err := ns.WithNetNSPath(path, func(ns.NetNS) error { return f() }); err != nil {
		t.Fatalf("in netns %s: %v", path, err)
	}
}
