package conntest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/trellisnet/trellis/internal/connectivity"
)

// DefaultImage is the probe pods' image: the agnhost the upstream e2e
// suites use, the one the lab imports into its nodes.
const DefaultImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"

// Ports the probe pods serve (agnhost netexec): HTTP and UDP echo, and
// their names in the pod spec (the named-port policy uses them).
const (
	HTTPPort     = 8080
	UDPPort      = 8081
	HTTPPortName = "http"
	UDPPortName  = "udp"
	container    = "agnhost"
	agnhost      = "/agnhost"
)

// Env is what the scenarios probe: the deployed pods and Services and the
// cluster facts found while deploying.
type Env struct {
	CS     kubernetes.Interface
	Config *rest.Config
	// NS is the test's namespace, PeerNS its second namespace (the
	// namespace-selector policy's allowed source).
	NS, PeerNS string
	// Nodes are the nodes the pods run on; NodeIPs their InternalIPs.
	Nodes   []string
	NodeIPs map[string]string
	// Pods by role (the Role* constants), as last read (with IPs).
	Pods map[string]*corev1.Pod
	// ServiceIP and NodePort are the echo Service's; HostPort is what the
	// hostNetwork pod serves on its node.
	ServiceIP string
	NodePort  int
	HostPort  int
	// External is --external-target (HOST:PORT), empty when not given.
	External string
	// DNSService is the cluster DNS Service (kube-system/kube-dns) when the
	// cluster has one; empty otherwise.
	DNSService string
	// Confirm confirms a blocked connection as a policy drop (nil: the
	// cluster has no Trellis, blocked connections are not confirmed).
	Confirm DropConfirmer

	// ProbeTimeout bounds a connection that should succeed (each of
	// ProbeAttempts tries); BlockTimeout bounds one that should be blocked;
	// EnforceTimeout bounds the wait for a policy to be enforced.
	// Slots, when not nil, bounds the execs in flight (its capacity): a
	// loaded API server or kubelet stalls exec streams when too many open
	// at once.
	Slots chan struct{}

	ProbeTimeout   time.Duration
	ProbeAttempts  int
	BlockTimeout   time.Duration
	EnforceTimeout time.Duration
	// ConfirmTimeout bounds the wait for a deny counter to grow (0: 8s,
	// the agent's counter cache and a margin).
	ConfirmTimeout time.Duration
}

// pod is the pod of role; scenarios only ask for deployed roles.
func (e *Env) pod(role string) *corev1.Pod { return e.Pods[role] }

// ip is the pod IP of role.
func (e *Env) ip(role string) string { return e.Pods[role].Status.PodIP }

// exec runs cmd in role's agnhost container and returns its stdout; the
// error carries stderr.
func (e *Env) exec(ctx context.Context, role string, cmd ...string) (string, string, error) {
	if e.Slots != nil {
		select {
		case e.Slots <- struct{}{}:
			defer func() { <-e.Slots }()
		case <-ctx.Done():
			return "", "", ctx.Err()
		}
	}
	var out, errOut bytes.Buffer
	err := connectivity.Exec(ctx, e.Config, e.CS, e.pod(role), container, cmd, &out, &errOut)
	return out.String(), strings.TrimSpace(errOut.String()), err
}

// connect runs `agnhost connect` once in role to host:port/proto with
// timeout: (true, "") connected, (false, why) no answer, an error when the
// probe could not be run.
func (e *Env) connect(ctx context.Context, role, host string, port int, proto string, timeout time.Duration) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	_, stderr, err := e.exec(ctx, role, agnhost, "connect", net.JoinHostPort(host, strconv.Itoa(port)),
		"--protocol="+proto, "--timeout="+timeout.String())
	ok, verr := connectivity.ConnectVerdict(err, stderr, e.NS+"/"+e.pod(role).Name)
	return ok, stderr, verr
}

// reach connects role to host:port/proto, retrying a failed connection
// (a first packet may race a new pod's programming): it returns nil when
// a try connected, else why the last did not.
func (e *Env) reach(ctx context.Context, role, host string, port int, proto string) error {
	var last string
	for i := 0; i < max(e.ProbeAttempts, 1); i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(300 * time.Millisecond):
			}
		}
		ok, why, err := e.connect(ctx, role, host, port, proto, e.ProbeTimeout)
		if err != nil {
			// The probe did not run (a stalled exec): try again.
			last = "probe did not run: " + err.Error()
			continue
		}
		if ok {
			if i > 0 {
				return &retried{tries: i + 1}
			}
			return nil
		}
		last = why
	}
	return fmt.Errorf("%s %s → %s: %s after %d tries of %s", proto, role, net.JoinHostPort(host, strconv.Itoa(port)),
		firstLine(last), max(e.ProbeAttempts, 1), e.ProbeTimeout)
}

// retried is reach's answer when a connection succeeded, but not at the
// first try: not a failure, said in the scenario's reason.
type retried struct{ tries int }

func (r *retried) Error() string { return fmt.Sprintf("connected at try %d", r.tries) }

// reachErr drops a retried success.
func reachErr(err error) error {
	var r *retried
	if errors.As(err, &r) {
		return nil
	}
	return err
}

// blocked probes once with BlockTimeout and says whether the connection
// got no answer.
func (e *Env) blocked(ctx context.Context, role, host string, port int, proto string) (bool, error) {
	ok, _, err := e.connect(ctx, role, host, port, proto, e.BlockTimeout)
	return !ok && err == nil, err
}

// dialResult is netexec's /dial answer.
type dialResult struct {
	Responses []string `json:"responses"`
	Errors    []string `json:"errors"`
}

// dial asks role's netexec (reached by port-forward through the API
// server, so from the pod's own network namespace) to send request to
// host:port over proto ("http" or "udp") and returns what it got back.
func (e *Env) dial(ctx context.Context, role, host string, port int, proto, request string) (dialResult, error) {
	var res dialResult
	p := e.pod(role)
	req := e.CS.CoreV1().RESTClient().Post().Resource("pods").Namespace(p.Namespace).Name(p.Name).SubResource("portforward")
	transport, upgrader, err := spdy.RoundTripperFor(e.Config)
	if err != nil {
		return res, fmt.Errorf("port-forward to %s: %w", p.Name, err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", req.URL())
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(HTTPPort)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return res, fmt.Errorf("port-forward to %s: %w", p.Name, err)
	}
	errCh := make(chan error, 1)
	go func() { errCh <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errCh:
		return res, fmt.Errorf("port-forward to %s: %w", p.Name, err)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		return res, fmt.Errorf("port-forward to %s: no local port: %v", p.Name, err)
	}
	q := url.Values{"host": {host}, "port": {strconv.Itoa(port)}, "protocol": {proto}, "request": {request}, "tries": {"1"}}
	u := fmt.Sprintf("http://127.0.0.1:%d/dial?%s", ports[0].Local, q.Encode())
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return res, err
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(hreq)
	if err != nil {
		return res, fmt.Errorf("netexec /dial in %s: %w", p.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, fmt.Errorf("netexec /dial in %s: %w", p.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("netexec /dial in %s: %s: %s", p.Name, resp.Status, firstLine(string(body)))
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return res, fmt.Errorf("netexec /dial in %s: %w", p.Name, err)
	}
	return res, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
