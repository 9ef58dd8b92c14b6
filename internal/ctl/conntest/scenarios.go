package conntest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
)

// Scenario families.
const (
	FamilyPodToPod = "pod-to-pod"
	FamilyService  = "service"
	FamilyNode     = "node"
	FamilyExternal = "external"
	FamilyDNS      = "dns"
	FamilyMTU      = "mtu"
	FamilyPolicy   = "policy"
)

// Scenarios is the default set, in report order.
func Scenarios() []Scenario {
	s := []Scenario{
		reachScenario(FamilyPodToPod, "same-node/tcp", RoleClient, RoleServerA, HTTPPort, "tcp"),
		reachScenario(FamilyPodToPod, "same-node/udp", RoleClient, RoleServerA, UDPPort, "udp"),
		crossNode(reachScenario(FamilyPodToPod, "cross-node/tcp", RoleClient, RoleServerB, HTTPPort, "tcp")),
		crossNode(reachScenario(FamilyPodToPod, "cross-node/udp", RoleClient, RoleServerB, UDPPort, "udp")),
		{Name: "service/cluster-ip/tcp", Family: FamilyService, Run: func(ctx context.Context, e *Env) Outcome {
			return reached(e.reach(ctx, RoleClient, e.ServiceIP, 80, "tcp"), "%s → Service %s/%s %s:80", RoleClient, e.NS, serviceName, e.ServiceIP)
		}},
		{Name: "service/cluster-ip/udp", Family: FamilyService, Run: func(ctx context.Context, e *Env) Outcome {
			return reached(e.reach(ctx, RoleClient, e.ServiceIP, 81, "udp"), "%s → Service %s/%s %s:81/udp", RoleClient, e.NS, serviceName, e.ServiceIP)
		}},
		{Name: "service/node-port/tcp", Family: FamilyService, Run: func(ctx context.Context, e *Env) Outcome {
			n := e.Nodes[len(e.Nodes)-1]
			return reached(e.reach(ctx, RoleClient, e.NodeIPs[n], e.NodePort, "tcp"), "%s → NodePort %s:%d (node %s)", RoleClient, e.NodeIPs[n], e.NodePort, n)
		}},
		{Name: "node/pod-to-node/tcp", Family: FamilyNode, Run: func(ctx context.Context, e *Env) Outcome {
			n := e.pod(RoleHost).Spec.NodeName
			return reached(e.reach(ctx, RoleClient, e.NodeIPs[n], e.HostPort, "tcp"), "%s → node %s %s:%d (hostNetwork pod)", RoleClient, n, e.NodeIPs[n], e.HostPort)
		}},
		{Name: "node/node-to-pod/tcp", Family: FamilyNode, Run: func(ctx context.Context, e *Env) Outcome {
			return reached(e.reach(ctx, RoleHost, e.ip(RoleServerA), HTTPPort, "tcp"), "node %s → %s %s:%d", e.pod(RoleHost).Spec.NodeName, RoleServerA, e.ip(RoleServerA), HTTPPort)
		}},
		{Name: "node/node-to-local-pod/tcp", Family: FamilyNode, Run: func(ctx context.Context, e *Env) Outcome {
			return reached(e.reach(ctx, RoleHost, e.ip(RoleServerB), HTTPPort, "tcp"), "node %s → local %s %s:%d", e.pod(RoleHost).Spec.NodeName, RoleServerB, e.ip(RoleServerB), HTTPPort)
		}},
		{Name: "external/tcp", Family: FamilyExternal, Run: func(ctx context.Context, e *Env) Outcome {
			if e.External == "" {
				return Skipf("no --external-target HOST:PORT given")
			}
			host, ps, err := net.SplitHostPort(e.External)
			port, perr := strconv.Atoi(ps)
			if err != nil || perr != nil {
				return Failf("--external-target %q is not HOST:PORT", e.External)
			}
			return reached(e.reach(ctx, RoleClient, host, port, "tcp"), "%s → %s", RoleClient, e.External)
		}},
		{Name: "dns/service-name", Family: FamilyDNS, Run: func(ctx context.Context, e *Env) Outcome {
			if e.DNSService == "" {
				return Skipf("the cluster has no DNS Service (kube-system/kube-dns)")
			}
			name := serviceName + "." + e.NS + ".svc"
			return reached(e.reach(ctx, RoleClient, name, 80, "tcp"), "%s → %s:80 resolved by %s", RoleClient, name, e.DNSService)
		}},
		crossNode(Scenario{Name: "mtu/tcp-full-size", Family: FamilyMTU, Run: tcpFullSize}),
		crossNode(Scenario{Name: "mtu/udp-df", Family: FamilyMTU, Run: udpAtMTU}),
	}
	return append(s, policyScenarios()...)
}

// crossNode skips s on a cluster with a single schedulable node.
func crossNode(s Scenario) Scenario {
	run := s.Run
	s.Run = func(ctx context.Context, e *Env) Outcome {
		if len(e.Nodes) < 2 {
			return Skipf("needs two schedulable nodes; the cluster has %d", len(e.Nodes))
		}
		return run(ctx, e)
	}
	return s
}

func reachScenario(family, name, from, to string, port int, proto string) Scenario {
	return Scenario{Name: family + "/" + name, Family: family, Run: func(ctx context.Context, e *Env) Outcome {
		return reached(e.reach(ctx, from, e.ip(to), port, proto), "%s (%s) → %s (%s) %s:%d/%s",
			from, e.pod(from).Spec.NodeName, to, e.pod(to).Spec.NodeName, e.ip(to), port, proto)
	}}
}

// reached is PASS with what was reached, or FAIL with why not.
func reached(err error, format string, a ...any) Outcome {
	what := fmt.Sprintf(format, a...)
	var r *retried
	switch {
	case errors.As(err, &r):
		return Passf("%s (%v)", what, r)
	case err != nil:
		return Failf("%s: %v", what, err)
	}
	return Passf("%s", what)
}

// podMTU reads role's eth0 MTU from inside the pod.
func (e *Env) podMTU(ctx context.Context, role string) (int, error) {
	out, stderr, err := e.exec(ctx, role, agnhost, "mounttest", "--file_content=/sys/class/net/eth0/mtu")
	if err != nil {
		return 0, fmt.Errorf("reading the MTU in %s: %v: %s", role, err, stderr)
	}
	i := strings.LastIndex(out, ": ")
	mtu, perr := strconv.Atoi(strings.TrimSpace(out[i+2:]))
	if i < 0 || perr != nil {
		return 0, fmt.Errorf("reading the MTU in %s: unexpected %q", role, firstLine(out))
	}
	return mtu, nil
}

// mtus reads the client's and the server's MTU; the path's is the smaller.
func (e *Env) pathMTU(ctx context.Context) (int, error) {
	var wg sync.WaitGroup
	var a, b int
	var ea, eb error
	wg.Add(2)
	go func() { defer wg.Done(); a, ea = e.podMTU(ctx, RoleClient) }()
	go func() { defer wg.Done(); b, eb = e.podMTU(ctx, RoleServerB) }()
	wg.Wait()
	if ea != nil {
		return 0, ea
	}
	if eb != nil {
		return 0, eb
	}
	return min(a, b), nil
}

// payload is n bytes of lower-case text (netexec's UDP echo lower-cases).
func payload(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[i%len(alphabet)]
	}
	return string(b)
}

// tcpFullSize has the client's netexec fetch /echo from server-b with a
// request and answer of several MTUs each, so both directions carry
// full-size segments (DF set, as TCP does).
func tcpFullSize(ctx context.Context, e *Env) Outcome {
	mtu, err := e.pathMTU(ctx)
	if err != nil {
		return Failf("%v", err)
	}
	msg := payload(3 * mtu)
	res, err := e.dial(ctx, RoleClient, e.ip(RoleServerB), HTTPPort, "http", "echo?msg="+msg)
	if err != nil {
		return Failf("%v", err)
	}
	if len(res.Responses) != 1 || res.Responses[0] != msg {
		return Failf("MTU %d: %d-byte echo %s → %s did not come back whole: %s", mtu, len(msg), RoleClient, RoleServerB, dialProblem(res))
	}
	return Passf("MTU %d: %d bytes each way %s → %s over TCP", mtu, len(msg), RoleClient, RoleServerB)
}

// udpAtMTU sends one UDP datagram that fills the path MTU exactly (an IP
// packet of MTU bytes; Linux sets DF on it, its default path MTU discovery
// for UDP sockets) and expects the same size back.
func udpAtMTU(ctx context.Context, e *Env) Outcome {
	mtu, err := e.pathMTU(ctx)
	if err != nil {
		return Failf("%v", err)
	}
	// IPv4 (20) + UDP (8) headers; netexec's command "echo " is part of the payload.
	hdr := 28
	if strings.Contains(e.ip(RoleServerB), ":") {
		hdr = 48
	}
	size := mtu - hdr
	if size > 2048 {
		size = 2048 // netexec's UDP buffer
	}
	msg := payload(size - len("echo "))
	res, err := e.dial(ctx, RoleClient, e.ip(RoleServerB), UDPPort, "udp", "echo "+msg)
	if err != nil {
		return Failf("%v", err)
	}
	if len(res.Responses) != 1 || res.Responses[0] != msg {
		return Failf("MTU %d: a %d-byte UDP packet %s → %s did not come back whole: %s", mtu, size+hdr, RoleClient, RoleServerB, dialProblem(res))
	}
	return Passf("MTU %d: %d-byte UDP packets (DF) %s → %s and back", mtu, size+hdr, RoleClient, RoleServerB)
}

func dialProblem(r dialResult) string {
	if len(r.Errors) > 0 {
		return firstLine(r.Errors[0])
	}
	if len(r.Responses) == 0 {
		return "no answer"
	}
	return fmt.Sprintf("got %d bytes", len(r.Responses[0]))
}
