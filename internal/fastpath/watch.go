package fastpath

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"
)

// Watch calls trigger on every link or IPv4 route change in the calling
// thread's network namespace (a pod interface appearing, its /32 route,
// an uplink), until ctx ends. The periodic resync of the controller's
// runner covers anything a lost notification would miss.
func Watch(ctx context.Context, trigger func()) error {
	logger := klog.FromContext(ctx).WithName("fastpath")
	links := make(chan netlink.LinkUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 256)
	onErr := func(err error) { logger.V(2).Info("Netlink subscription error", "err", err) }
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("fast path: subscribe to link updates: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, ctx.Done(), netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("fast path: subscribe to route updates: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-links:
			if !ok {
				return nil
			}
			trigger()
		case u, ok := <-routes:
			if !ok {
				return nil
			}
			if u.Dst != nil && u.Scope == netlink.SCOPE_LINK {
				trigger()
			}
		}
	}
}
