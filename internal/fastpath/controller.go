package fastpath

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/cilium/ebpf"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/syncrunner"
)

// Conntrack sysctls the fast path depends on.
const (
	// SysctlBeLiberal: packets of a fast-pathed flow that later take the
	// full path (a route change, an evicted neighbour) must not be judged
	// out of window by conntrack, which has not seen the segments in
	// between. With it set, conntrack still tracks the flow but does not
	// mark such segments invalid.
	SysctlBeLiberal = "net/netfilter/nf_conntrack_tcp_be_liberal"
	// SysctlEstablishedTimeout is what each fast-pathed packet refreshes
	// its conntrack entry to, as the full path would.
	SysctlEstablishedTimeout = "net/netfilter/nf_conntrack_tcp_timeout_established"
)

// AnnotationOff is the Node annotation that turns the fast path off on
// that node when its value is "off" (the agent detaches the programs; the
// node's pods take the full path for every packet).
const AnnotationOff = "trellis.dev/fast-path"

// OffByAnnotation reports whether a Node's annotations turn its fast path
// off.
func OffByAnnotation(annotations map[string]string) bool { return annotations[AnnotationOff] == "off" }

// Sysctls reads and sets kernel parameters of the node's namespace.
type Sysctls interface {
	Get(path string) (string, error)
	Set(path, value string) error
}

// Config wires a Controller.
type Config struct {
	// Disabled makes every sync detach the fast path from every interface
	// (turned off by configuration); only Kernel and Sync are used then.
	Disabled bool
	// Kernel attaches and detaches the programs.
	Kernel *Kernel
	// Programs are the loaded programs and maps (Load).
	Programs *Programs
	// Sysctls reads and sets the conntrack parameters.
	Sysctls Sysctls
	// Uplinks returns the names of the node's uplink devices (the underlay
	// device holding the node IP, the VXLAN device) at each sync.
	Uplinks func() []string
	// ExemptCTMark: connections whose conntrack mark has any of these bits
	// set stay on the full path (0: none).
	ExemptCTMark uint32
	// Encrypted: pod traffic between nodes is encrypted (WireGuard), so
	// the programs never redirect a pod's packet out of an uplink (see
	// Desired).
	Encrypted bool
	// Off, when set, is asked at every sync whether the fast path is
	// turned off on this node (the Node's trellis.dev/fast-path annotation):
	// then the sync detaches it as a disabled controller does, and
	// attaches it again once Off says false.
	Off func() bool
	// Sync tunes the controller's runner.
	Sync syncrunner.Options
}

// Controller keeps the fast path attached to every pod interface and uplink
// and its interface map equal to the kernel's view (full-state sync). Run
// it (the embedded Runner) and Trigger it on link and route changes.
type Controller struct {
	*syncrunner.Runner
	k        *Kernel
	disabled bool
	progs    *Programs
	ids      map[string]uint32 // program name -> kernel program ID
	sys      Sysctls
	uplinks  func() []string
	exempt   uint32
	// encrypted is Config.Encrypted.
	encrypted bool
	off       func() bool
}

// New returns a controller attaching cfg.Programs.
func New(cfg Config) (*Controller, error) {
	if cfg.Disabled {
		if cfg.Kernel == nil {
			return nil, errors.New("fast path controller: Kernel is required")
		}
		c := &Controller{k: cfg.Kernel, disabled: true}
		c.Runner = syncrunner.New("fastpath", c.Sync, cfg.Sync)
		return c, nil
	}
	if cfg.Kernel == nil || cfg.Programs == nil || cfg.Sysctls == nil || cfg.Uplinks == nil {
		return nil, errors.New("fast path controller: Kernel, Programs, Sysctls and Uplinks are required")
	}
	progs := cfg.Programs
	c := &Controller{k: cfg.Kernel, progs: progs, sys: cfg.Sysctls, uplinks: cfg.Uplinks, ids: map[string]uint32{},
		exempt: cfg.ExemptCTMark, off: cfg.Off, encrypted: cfg.Encrypted}
	for name, p := range map[string]*ebpf.Program{ProgFromPod: progs.FromPod, ProgToPod: progs.ToPod} {
		info, err := p.Info()
		if err != nil {
			return nil, fmt.Errorf("fast path: program info of %s: %w", name, err)
		}
		id, ok := info.ID()
		if !ok {
			return nil, fmt.Errorf("fast path: the kernel reports no ID for %s", name)
		}
		c.ids[name] = uint32(id)
	}
	c.Runner = syncrunner.New("fastpath", c.Sync, cfg.Sync)
	return c, nil
}

// Sync makes the kernel match the desired state: conntrack settings, the
// programs on every pod interface and uplink, the interface map.
func (c *Controller) Sync(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("fastpath")
	if c.disabled || (c.off != nil && c.off()) {
		n, err := c.k.DetachAll()
		if n > 0 {
			logger.Info("Fast path turned off: detached it", "interfaces", n, "byNodeAnnotation", !c.disabled)
		}
		return err
	}
	if err := c.sys.Set(SysctlBeLiberal, "1"); err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	v, err := c.sys.Get(SysctlEstablishedTimeout)
	if err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	secs, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return fmt.Errorf("fast path: %s=%q: %w", SysctlEstablishedTimeout, v, err)
	}
	if err := c.progs.SetSettings(Settings{ConntrackTimeoutMs: uint32(min(secs*1000, math.MaxUint32)), ExemptCTMark: c.exempt}); err != nil {
		return err
	}
	links, err := c.k.Links()
	if err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	d := Desired(links, c.uplinks(), c.encrypted)
	have, err := c.k.Attached(links)
	if err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	want := map[int]bool{}
	attached := 0
	for _, a := range d.Attach {
		want[a.Index] = true
		if have[a.Index] == c.ids[a.Program] {
			continue
		}
		prog := c.progs.FromPod
		if a.Program == ProgToPod {
			prog = c.progs.ToPod
		}
		if err := c.k.Attach(a.Index, a.Program, prog); err != nil {
			return fmt.Errorf("fast path on %s: %w", a.Name, err)
		}
		attached++
	}
	detached := 0
	for idx := range have {
		if !want[idx] {
			if err := c.k.Detach(idx); err != nil {
				return err
			}
			detached++
		}
	}
	changed, err := SyncMap(c.progs.Ifaces, d.Ifaces)
	if err != nil {
		return err
	}
	n, err := SyncMap(c.progs.PodAddr, d.PodAddrs)
	if err != nil {
		return err
	}
	changed += n
	if n, err = SyncMap(c.progs.PodAddr6, d.PodAddrs6); err != nil {
		return err
	}
	changed += n
	if attached+detached+changed > 0 {
		logger.V(2).Info("Fast path synced", "attached", attached, "detached", detached, "mapChanges", changed,
			"interfaces", len(d.Attach))
	}
	return nil
}
