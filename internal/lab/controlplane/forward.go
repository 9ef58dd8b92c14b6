package controlplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Forward is the body of `trellis-lab __forward`: it accepts connections on
// listen (in the machine's namespace, a loopback address) and relays each to
// target, dialled inside the lab namespace at nsPath.
func Forward(ctx context.Context, listen, nsPath, target string) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	go func() { <-ctx.Done(); l.Close() }()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("forwarder: accept: %w", err)
		}
		go relay(c, nsPath, target)
	}
}

func relay(c net.Conn, nsPath, target string) {
	defer c.Close()
	up, err := topology.DialInNetns(nsPath, "tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	go cp(up, c)
	go cp(c, up)
	wg.Wait()
}
