//go:build e2e

package encryption

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/test/e2e/framework"
)

// The test's own servers listen in the pods' network namespaces (the test
// process enters them), each on a port of its own.
var lastPort atomic.Int32

func init() { lastPort.Store(20000) }

func nextPort() int { return int(lastPort.Add(1)) }

// repeatTo repeats p to n bytes.
func repeatTo(p []byte, n int) []byte {
	return bytes.Repeat(p, n/len(p)+1)[:n]
}

// tcpTransfer sends data from pod i to pod j over a new TCP connection
// (the server is the test's, in pod j's namespace) and checks that every
// byte arrived. It returns the sender's MSS.
func (w *world) tcpTransfer(t *testing.T, i, j int, data []byte, timeout time.Duration) (mss int, err error) {
	t.Helper()
	mss, err = tcpSend(w.netns(t, i), w.netns(t, j), w.ip(t, j), data, timeout)
	if err != nil {
		return mss, fmt.Errorf("%s -> %s: %w", w.pods[i], w.pods[j], err)
	}
	return mss, nil
}

// errConnect marks a TCP transfer whose connection was never established;
// errServer one whose server could not be started.
var (
	errConnect = errors.New("connect")
	errServer  = errors.New("the test's server")
)

// tcpSend sends data from the namespace srcNS to the test's server at
// dstIP in dstNS over a new TCP connection and checks that every byte
// arrived. It returns the sender's MSS.
func tcpSend(srcNS, dstNS, dstIP string, data []byte, timeout time.Duration) (mss int, err error) {
	port := strconv.Itoa(nextPort())
	var ln net.Listener
	if err := inNetnsPath(dstNS, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(dstIP, port))
		return err
	}); err != nil {
		return 0, fmt.Errorf("%w: %v", errServer, err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	var conn net.Conn
	if err := inNetnsPath(srcNS, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", net.JoinHostPort(dstIP, port), min(3*time.Second, timeout))
		return err
	}); err != nil {
		return 0, fmt.Errorf("%w: %v", errConnect, err)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	_, werr := conn.Write(data)
	mss = tcpMSS(conn)
	conn.Close()
	if werr != nil {
		return mss, fmt.Errorf("write: %w", werr)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, data) {
			return mss, fmt.Errorf("%d of %d bytes arrived intact", len(b), len(data))
		}
	case <-time.After(timeout + time.Second):
		return mss, fmt.Errorf("the transfer did not end within %s", timeout)
	}
	return mss, nil
}

// inNetnsPath runs f with the calling goroutine in the network namespace at
// path (sockets made in f stay there).
func inNetnsPath(path string, f func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return f() })
}

// tcpMSS returns the connection's send MSS (0 if unknown).
func tcpMSS(c net.Conn) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	mss := 0
	_ = raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			mss = int(info.Snd_mss)
		}
	})
	return mss
}

// udpListen opens the test's UDP server in pod j's namespace and counts the
// datagrams that arrive; stop closes it and returns the count and the
// largest datagram seen.
func (w *world) udpListen(t *testing.T, j int) (addr string, stop func() (count, largest int)) {
	t.Helper()
	port := nextPort()
	ipJ := w.ip(t, j)
	var pc *net.UDPConn
	framework.InNetns(t, w.netns(t, j), func() error {
		var err error
		pc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ipJ), Port: port})
		return err
	})
	var n, big atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			k, err := pc.Read(buf)
			if err != nil {
				return
			}
			n.Add(1)
			if int64(k) > big.Load() {
				big.Store(int64(k))
			}
		}
	}()
	return net.JoinHostPort(ipJ, strconv.Itoa(port)), func() (int, int) {
		time.Sleep(300 * time.Millisecond) // the last datagrams
		pc.Close()
		<-done
		return int(n.Load()), int(big.Load())
	}
}

// udpSender opens a UDP socket in pod i's namespace to addr; df sets the
// don't-fragment bit on every datagram (IP_PMTUDISC_DO: a datagram larger
// than the path MTU is refused, never fragmented).
func (w *world) udpSender(t *testing.T, i int, addr string, df bool) net.Conn {
	t.Helper()
	d := net.Dialer{}
	if df {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	var conn net.Conn
	framework.InNetns(t, w.netns(t, i), func() error {
		var err error
		conn, err = d.Dial("udp4", addr)
		return err
	})
	t.Cleanup(func() { conn.Close() })
	return conn
}

// udpSend sends count datagrams of payload from pod i to pod j, 10 ms
// apart, and returns how many arrived.
func (w *world) udpSend(t *testing.T, i, j int, payload []byte, count int) int {
	t.Helper()
	addr, stop := w.udpListen(t, j)
	conn := w.udpSender(t, i, addr, false)
	for k := 0; k < count; k++ {
		_, _ = conn.Write(payload) // a refused send is a lost datagram
		time.Sleep(10 * time.Millisecond)
	}
	got, _ := stop()
	return got
}

// udpDF sends one datagram of size bytes with DF from pod i to pod j until
// one arrives whole (up to 5 tries: the first may wait for a handshake).
func (w *world) udpDF(t *testing.T, i, j, size int, payload []byte) error {
	t.Helper()
	addr, stop := w.udpListen(t, j)
	conn := w.udpSender(t, i, addr, true)
	data := repeatTo(payload, size)
	var errs []error
	for try := 0; try < 5; try++ {
		if _, err := conn.Write(data); err != nil {
			errs = append(errs, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	n, largest := stop()
	if n == 0 || largest != size {
		return fmt.Errorf("%s -> %s: %d-byte datagram with DF: %d arrived (largest %d bytes); send errors: %w",
			w.pods[i], w.pods[j], size, n, largest, errors.Join(errs...))
	}
	return nil
}
