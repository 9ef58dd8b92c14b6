package drops

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// Resolver names the pods behind interfaces and addresses. Its methods are
// called for every drop read, so they must be cheap and must not block.
type Resolver interface {
	// Interface returns the name of the local interface ifindex and the
	// pod ("namespace/name") it belongs to; "" for either when unknown.
	Interface(ifindex uint32) (name, pod string)
	// PodByIP names the pod holding address a ("" when none).
	PodByIP(a netip.Addr) string
	// Policies lists the NetworkPolicies ("namespace/name") selecting pod
	// in direction (ingress or egress).
	Policies(pod, direction string) []string
}

// Config of a Source.
type Config struct {
	Node  string
	Group uint16
	Ring  *Ring
	// Resolver names pods; nil leaves them out.
	Resolver Resolver
	// OnUnavailable is called with the reason when the group cannot be
	// read (once per change of reason; "" when it can again).
	OnUnavailable func(reason string)
	// Registerer receives the reader's metrics (nil: none).
	Registerer prometheus.Registerer
	// Retry is how often a group that could not be bound is tried again
	// (default 30 s).
	Retry time.Duration
	// Open binds the group (default: Open in the calling thread's network
	// namespace).
	Open func(group uint16) (*Reader, error)
}

// Source reads the deny log into a Ring.
type Source struct {
	cfg             Config
	records, lost   prometheus.Counter
	undecoded       prometheus.Counter
	mu              sync.Mutex
	unavailable     string
	reportedUnavail string
}

// NewSource returns a Source; Run reads.
func NewSource(cfg Config) (*Source, error) {
	if cfg.Ring == nil {
		return nil, errors.New("drops: Config.Ring is required")
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 30 * time.Second
	}
	if cfg.Open == nil {
		cfg.Open = Open
	}
	s := &Source{cfg: cfg,
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "trellis_policy_deny_log_records_total",
			Help: "Deny-log (nflog) records the agent read."}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "trellis_policy_deny_log_lost_total",
			Help: "Times deny-log records were lost because the agent's socket buffer was full."}),
		undecoded: prometheus.NewCounter(prometheus.CounterOpts{Name: "trellis_policy_deny_log_undecoded_total",
			Help: "Deny-log records the agent could not decode (not a trellis-deny prefix, not IPv4)."}),
	}
	if cfg.Group == 0 {
		s.unavailable = "the deny log is off on this node (agent config policyDenyLog: 0)"
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.records, s.lost, s.undecoded} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register deny-log metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Unavailable is why drops cannot be read on this node ("" when they can).
func (s *Source) Unavailable() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unavailable
}

func (s *Source) setUnavailable(reason string) {
	s.mu.Lock()
	changed := reason != s.reportedUnavail
	s.unavailable, s.reportedUnavail = reason, reason
	s.mu.Unlock()
	if changed && s.cfg.OnUnavailable != nil {
		s.cfg.OnUnavailable(reason)
	}
}

// Run reads the group until ctx is cancelled. A group it cannot bind (held
// by another listener) makes drops unavailable, and is tried again every
// Retry.
func (s *Source) Run(ctx context.Context) error {
	if s.cfg.Group == 0 {
		<-ctx.Done()
		return nil
	}
	logger := klog.FromContext(ctx).WithName("drops")
	for {
		r, err := s.cfg.Open(s.cfg.Group)
		if err != nil {
			reason := fmt.Sprintf("cannot read the deny log (nflog group %d): %v", s.cfg.Group, err)
			if reason != s.Unavailable() {
				logger.Error(err, "Drops are unavailable on this node; retrying", "group", s.cfg.Group, "every", s.cfg.Retry)
			}
			s.setUnavailable(reason)
		} else {
			if s.Unavailable() != "" {
				logger.Info("Reading the deny log", "group", s.cfg.Group)
			}
			s.setUnavailable("")
			err = s.read(ctx, r)
			_ = r.Close()
			if ctx.Err() != nil {
				return nil
			}
			logger.Error(err, "Reading the deny log failed; binding again", "group", s.cfg.Group)
			s.setUnavailable(fmt.Sprintf("reading the deny log (nflog group %d) failed: %v", s.cfg.Group, err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.cfg.Retry):
		}
	}
}

// read receives records until ctx is cancelled or the socket fails.
func (s *Source) read(ctx context.Context, r *Reader) error {
	stop := context.AfterFunc(ctx, func() { _ = r.SetDeadline(time.Now()) })
	defer stop()
	for {
		recs, err := r.Receive()
		for i := range recs {
			s.add(&recs[i])
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, unix.ENOBUFS):
			s.lost.Inc()
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		default:
			return err
		}
	}
}

func (s *Source) add(rec *Record) {
	s.records.Inc()
	d, ok := s.Decode(rec)
	if !ok {
		s.undecoded.Inc()
		return
	}
	s.cfg.Ring.Add(d)
}

// Decode turns a record into a Drop naming its pods; ok is false for a
// record that is not a trellis deny or not IPv4.
func (s *Source) Decode(rec *Record) (agentapi.Drop, bool) {
	pre, err := ParsePrefix(rec.Prefix)
	if err != nil {
		return agentapi.Drop{}, false
	}
	pkt, err := DecodeIPv4(rec.Payload)
	if err != nil {
		return agentapi.Drop{}, false
	}
	d := agentapi.Drop{
		Time: rec.Time.UTC(), Node: s.cfg.Node, Protocol: ProtocolName(pkt.Proto),
		Direction: pre.Direction, Verdict: pre.Verdict, Group: pre.Group,
		Src: agentapi.Endpoint{IP: pkt.Src.String(), Port: pkt.SrcPort},
		Dst: agentapi.Endpoint{IP: pkt.Dst.String(), Port: pkt.DstPort},
	}
	res := s.cfg.Resolver
	if res == nil {
		return d, true
	}
	var inName, inPod, outName, outPod string
	if rec.InDev != 0 {
		inName, inPod = res.Interface(rec.InDev)
	}
	if rec.OutDev != 0 {
		outName, outPod = res.Interface(rec.OutDev)
	}
	d.Src.Pod, d.Dst.Pod = inPod, outPod
	// The local end is named by its interface (for a spoofed packet: the
	// pod that sent it, whatever address it claims); the other by address.
	if d.Src.Pod == "" {
		d.Src.Pod = res.PodByIP(pkt.Src)
	}
	if d.Dst.Pod == "" {
		d.Dst.Pod = res.PodByIP(pkt.Dst)
	}
	switch {
	case pre.Direction == "ingress":
		d.Pod, d.Interface = outPod, outName
	case pre.Direction == "egress" || inName != "":
		d.Pod, d.Interface = inPod, inName
	default:
		d.Pod, d.Interface = outPod, outName
	}
	if d.Pod != "" && pre.Verdict == VerdictPolicy {
		d.Policies = res.Policies(d.Pod, pre.Direction)
	}
	return d, true
}
