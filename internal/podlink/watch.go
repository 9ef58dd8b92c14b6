package podlink

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// WatchOptions configure a Watcher.
type WatchOptions struct {
	// Netns is the network namespace to watch (nil: the calling thread's).
	Netns *netns.NsHandle
	// Resync relists even without notifications (default 1 minute): a
	// safety net, since a lost notification surfaces as a subscription
	// error, on which the Watcher subscribes again and relists.
	Resync time.Duration
}

// Watcher keeps the list of local pod interfaces current from netlink
// notifications (links, routes) and tells its subscribers when it changes.
// Every change is a full relist (List), so the list is always one
// consistent dump; notifications only say when to take it.
type Watcher struct {
	opts WatchOptions

	mu      sync.Mutex
	cur     []Interface
	live    bool // subscribed and listed since: cur is current
	onPods  []func([]Interface)
	onLinks []func()
}

// NewWatcher returns a Watcher; Run starts it.
func NewWatcher(opts WatchOptions) *Watcher {
	if opts.Resync <= 0 {
		opts.Resync = time.Minute
	}
	return &Watcher{opts: opts}
}

// OnChange registers fn, called with the new list after every change of
// the pod interface list (an interface, its addresses, group or alias). fn
// must not block or modify the list. Register before Run.
func (w *Watcher) OnChange(fn func([]Interface)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onPods = append(w.onPods, fn)
}

// OnLinkChange registers fn, called on every change of a link that is not
// a pod interface (an uplink appearing, say). fn must not block.
func (w *Watcher) OnLinkChange(fn func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onLinks = append(w.onLinks, fn)
}

// PodInterfaces returns the current pod interfaces: the watched list while
// the watch is live, otherwise a fresh List.
func (w *Watcher) PodInterfaces() ([]Interface, error) {
	w.mu.Lock()
	if w.live {
		out := slices.Clone(w.cur)
		w.mu.Unlock()
		return out, nil
	}
	w.mu.Unlock()
	h, closeH, err := w.handle()
	if err != nil {
		return nil, err
	}
	defer closeH()
	return List(h)
}

func (w *Watcher) handle() (*netlink.Handle, func(), error) {
	if w.opts.Netns == nil {
		return &netlink.Handle{}, func() {}, nil
	}
	h, err := netlink.NewHandleAt(*w.opts.Netns)
	if err != nil {
		return nil, nil, fmt.Errorf("netlink handle in the watched namespace: %w", err)
	}
	return h, h.Close, nil
}

// Run watches until ctx ends. Subscription errors are logged and followed
// by a new subscription and a relist (with backoff); Run returns an error
// only when it cannot open a netlink handle at all.
func (w *Watcher) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("podlink")
	h, closeH, err := w.handle()
	if err != nil {
		return err
	}
	defer closeH()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := w.watch(ctx, h)
		w.setLive(false)
		if ctx.Err() != nil {
			return nil
		}
		logger.Info("Pod interface watch interrupted; subscribing again and relisting", "err", err, "after", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// watch subscribes, lists, then relists on every relevant notification
// until a subscription fails or ctx ends.
func (w *Watcher) watch(ctx context.Context, h *netlink.Handle) error {
	done := make(chan struct{})
	defer close(done)
	errs := make(chan error, 2)
	onErr := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	links := make(chan netlink.LinkUpdate, 256)
	routes := make(chan netlink.RouteUpdate, 1024)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: w.opts.Netns, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: w.opts.Netns, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to route updates: %w", err)
	}
	// Listed after subscribing: nothing can fall between list and watch.
	if err := w.relist(h, true); err != nil {
		return err
	}
	tick := time.NewTicker(w.opts.Resync)
	defer tick.Stop()
	for {
		pods, other := false, false
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		case <-tick.C:
			pods = true
		case u, ok := <-links:
			if !ok {
				return fmt.Errorf("link subscription closed")
			}
			pods, other = classifyLink(u)
		case u, ok := <-routes:
			if !ok {
				return fmt.Errorf("route subscription closed")
			}
			pods = isHostRouteUpdate(u)
		}
		// Coalesce what is already queued into this one relist.
		for drained := false; !drained; {
			select {
			case u, ok := <-links:
				if !ok {
					return fmt.Errorf("link subscription closed")
				}
				p, o := classifyLink(u)
				pods, other = pods || p, other || o
			case u, ok := <-routes:
				if !ok {
					return fmt.Errorf("route subscription closed")
				}
				pods = pods || isHostRouteUpdate(u)
			default:
				drained = true
			}
		}
		if other {
			w.notify(w.linkSubscribers())
		}
		if pods {
			if err := w.relist(h, false); err != nil {
				return err
			}
		}
	}
}

func classifyLink(u netlink.LinkUpdate) (pod, other bool) {
	if u.Link == nil || u.Link.Attrs() == nil {
		return true, true
	}
	if IsHostName(u.Link.Attrs().Name) {
		return true, false
	}
	return false, true
}

func isHostRouteUpdate(u netlink.RouteUpdate) bool {
	if u.Type != unix.RTM_NEWROUTE && u.Type != unix.RTM_DELROUTE {
		return false
	}
	_, ok := hostRouteAddr(&u.Route)
	return ok
}

// relist lists and, when the list changed (or first is set), stores it and
// notifies the subscribers.
func (w *Watcher) relist(h *netlink.Handle, first bool) error {
	l, err := List(h)
	if err != nil {
		return err
	}
	w.mu.Lock()
	changed := first || !equalLists(l, w.cur)
	w.cur, w.live = l, true
	subs := slices.Clone(w.onPods)
	w.mu.Unlock()
	if changed {
		for _, fn := range subs {
			fn(slices.Clone(l))
		}
	}
	return nil
}

func (w *Watcher) linkSubscribers() []func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.onLinks)
}

func (w *Watcher) notify(fns []func()) {
	for _, fn := range fns {
		fn()
	}
}

func (w *Watcher) setLive(v bool) {
	w.mu.Lock()
	w.live = v
	w.mu.Unlock()
}
