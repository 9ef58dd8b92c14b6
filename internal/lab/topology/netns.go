package topology

import (
	"context"
	"net"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/lab/proc"
)

// InNetns runs argv inside the named network namespace.
func InNetns(ctx context.Context, netns string, argv ...string) error {
	return proc.Run(ctx, "nsenter", append([]string{"--net=/run/netns/" + netns, "--"}, argv...)...)
}

// DialInNetns opens a connection from inside the network namespace at
// nsPath (a /run/netns/NAME or /proc/PID/ns/net path).
func DialInNetns(nsPath, network, addr string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return conn, err
}
