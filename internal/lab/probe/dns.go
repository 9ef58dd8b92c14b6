package probe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// ResolvConf is the part of resolv.conf(5) a stub resolver acts on.
type ResolvConf struct {
	Nameservers []netip.Addr
	Search      []string
	Ndots       int
}

// ParseResolvConf reads nameserver, search (or domain) and options ndots;
// other lines are ignored. A file without a nameserver is an error: the pod
// could resolve nothing.
func ParseResolvConf(data []byte) (ResolvConf, error) {
	rc := ResolvConf{Ndots: 1}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) < 2 {
				return rc, errors.New("resolv.conf: nameserver without an address")
			}
			a, err := netip.ParseAddr(f[1])
			if err != nil {
				return rc, fmt.Errorf("resolv.conf: bad nameserver %q: %w", f[1], err)
			}
			rc.Nameservers = append(rc.Nameservers, a)
		case "search", "domain": // the last of them wins, as in resolv.conf(5)
			rc.Search = append([]string(nil), f[1:]...)
		case "options":
			for _, o := range f[1:] {
				if v, ok := strings.CutPrefix(o, "ndots:"); ok {
					n, err := strconv.Atoi(v)
					if err != nil || n < 0 {
						return rc, fmt.Errorf("resolv.conf: bad option %q", o)
					}
					rc.Ndots = min(n, 15)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return rc, fmt.Errorf("reading resolv.conf: %w", err)
	}
	if len(rc.Nameservers) == 0 {
		return rc, errors.New("resolv.conf: no nameserver")
	}
	return rc, nil
}

// Candidates returns the fully qualified names a stub resolver tries for
// name, in order: a rooted name only as it is; a name with at least ndots
// dots as it is first, then with each search domain; any other name with each
// search domain first, then as it is.
func (rc ResolvConf) Candidates(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	var searched []string
	for _, s := range rc.Search {
		searched = append(searched, name+"."+strings.TrimSuffix(s, ".")+".")
	}
	if strings.Count(name, ".") >= rc.Ndots {
		return append([]string{name + "."}, searched...)
	}
	return append(searched, name+".")
}

// DNSAnswer is what a lookup from a pod found.
type DNSAnswer struct {
	Server netip.Addr
	Name   string       // the fully qualified name that answered
	Addrs  []netip.Addr // its IPv4 addresses
	Tried  []string     // the names asked before it, each answered "no such name"
}

// Lookup outcomes that are answers about DNS, not about the request.
var (
	// ErrNoSuchName means every candidate name was answered "no such name".
	ErrNoSuchName = errors.New("no such name")
	// ErrNoAnswer means the server did not answer, or answered with an error.
	ErrNoAnswer = errors.New("no answer")
)

// LookupFromNetns resolves name the way the stub resolver of a pod with
// resolver configuration rc does, from inside the network namespace at nsPath:
// candidate names in order, IPv4 (A) queries to the first nameserver over
// proto ("udp" or "tcp"). A candidate answered "no such name" moves on to
// the next; any other failure (a time-out, a refusal) ends the lookup.
func LookupFromNetns(ctx context.Context, nsPath string, rc ResolvConf, name, proto string, timeout time.Duration) (DNSAnswer, error) {
	if proto != "udp" && proto != "tcp" {
		return DNSAnswer{}, fmt.Errorf("%w: DNS over %q (udp or tcp)", connectivity.ErrUsage, proto)
	}
	if len(rc.Nameservers) == 0 {
		return DNSAnswer{}, errors.New("no nameserver to ask")
	}
	ans := DNSAnswer{Server: rc.Nameservers[0]}
	server := net.JoinHostPort(ans.Server.String(), "53")
	r := &net.Resolver{PreferGo: true, StrictErrors: true,
		Dial: func(_ context.Context, network, _ string) (net.Conn, error) {
			if proto == "tcp" { // else as the resolver asks: UDP, TCP after a truncated answer
				network = "tcp"
			}
			return topology.DialInNetns(nsPath, network, server, timeout)
		}}
	for _, fqdn := range rc.Candidates(name) {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, err := r.LookupNetIP(lctx, "ip4", fqdn)
		cancel()
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			ans.Tried = append(ans.Tried, fqdn)
			continue
		}
		if err != nil {
			return ans, fmt.Errorf("%w: asking %s over %s for %s: %w", ErrNoAnswer, server, proto, fqdn, err)
		}
		ans.Name = fqdn
		for _, a := range addrs {
			ans.Addrs = append(ans.Addrs, a.Unmap())
		}
		return ans, nil
	}
	return ans, fmt.Errorf("%s: %w (asked %s for %v)", name, ErrNoSuchName, server, ans.Tried)
}

// PodResolver returns the network namespace of a running pod and the resolver
// configuration its containers see (the resolv.conf kubelet wrote for it).
func PodResolver(pod *corev1.Pod) (string, ResolvConf, error) {
	nsPath, err := PodNetns(pod)
	if err != nil {
		return "", ResolvConf{}, err
	}
	conf := strings.TrimSuffix(nsPath, "/ns/net") + "/root/etc/resolv.conf"
	data, err := os.ReadFile(conf)
	if err != nil {
		return "", ResolvConf{}, fmt.Errorf("reading pod %s/%s's resolv.conf: %w", pod.Namespace, pod.Name, err)
	}
	rc, err := ParseResolvConf(data)
	if err != nil {
		return "", ResolvConf{}, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nsPath, rc, nil
}

// Lookup resolves name from pod src (NS/POD) with the pod's own resolver
// configuration, over proto; a valid server replaces the pod's nameserver (to
// ask one DNS server directly, e.g. a single CoreDNS replica).
func (pr Netns) Lookup(ctx context.Context, src, name, proto string, server netip.Addr) (DNSAnswer, error) {
	ns, podName, err := connectivity.SplitPodRef(src)
	if err != nil {
		return DNSAnswer{}, err
	}
	pod, err := pr.CS.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return DNSAnswer{}, fmt.Errorf("source pod %s: %w", src, err)
	}
	nsPath, rc, err := PodResolver(pod)
	if err != nil {
		return DNSAnswer{}, err
	}
	if server.IsValid() {
		rc.Nameservers = []netip.Addr{server}
	}
	timeout := pr.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	return LookupFromNetns(ctx, nsPath, rc, name, proto, timeout)
}
