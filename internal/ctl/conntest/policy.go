package conntest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// probe is one connection a policy scenario checks.
type probe struct {
	from, to string // roles
	port     int
	proto    string
}

func (p probe) String() string { return fmt.Sprintf("%s → %s %d/%s", p.from, p.to, p.port, p.proto) }

// policyCase is a NetworkPolicy with the connections it must allow and
// the negative control it must block.
type policyCase struct {
	name    string
	egress  bool // the policy isolates the source (egress), else the destination
	spec    func(e *Env) networkingv1.NetworkPolicySpec
	allowed []probe
	blocked probe
}

func selectRole(role string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{labelRole: role}}
}

var (
	tcp = ptr.To(corev1.ProtocolTCP)
	udp = ptr.To(corev1.ProtocolUDP)
)

func policyCases() []policyCase {
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	return []policyCase{
		{name: "default-deny-ingress",
			spec: func(*Env) networkingv1.NetworkPolicySpec {
				return networkingv1.NetworkPolicySpec{PodSelector: selectRole(RoleDenyIngress), PolicyTypes: ingress}
			},
			blocked: probe{RoleClient, RoleDenyIngress, HTTPPort, "tcp"}},
		{name: "default-deny-egress", egress: true,
			spec: func(*Env) networkingv1.NetworkPolicySpec {
				return networkingv1.NetworkPolicySpec{PodSelector: selectRole(RoleEgressDenied),
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}
			},
			allowed: []probe{{RoleClient, RoleServerB, HTTPPort, "tcp"}},
			blocked: probe{RoleEgressDenied, RoleServerB, HTTPPort, "tcp"}},
		{name: "allow-pod-label",
			spec: func(*Env) networkingv1.NetworkPolicySpec {
				return networkingv1.NetworkPolicySpec{PodSelector: selectRole(RoleLabel), PolicyTypes: ingress,
					Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
						PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{labelAllowed: "true"}}}}}}}
			},
			allowed: []probe{{RoleAllowed, RoleLabel, HTTPPort, "tcp"}},
			blocked: probe{RoleClient, RoleLabel, HTTPPort, "tcp"}},
		{name: "allow-namespace",
			spec: func(e *Env) networkingv1.NetworkPolicySpec {
				return networkingv1.NetworkPolicySpec{PodSelector: selectRole(RoleNamespace), PolicyTypes: ingress,
					Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": e.PeerNS}}}}}}}
			},
			allowed: []probe{{RolePeer, RoleNamespace, HTTPPort, "tcp"}},
			blocked: probe{RoleClient, RoleNamespace, HTTPPort, "tcp"}},
		{name: "allow-ipblock-except",
			spec: func(e *Env) networkingv1.NetworkPolicySpec {
				all, host := "0.0.0.0/0", "/32"
				if strings.Contains(e.ip(RoleClient), ":") {
					all, host = "::/0", "/128"
				}
				return networkingv1.NetworkPolicySpec{PodSelector: selectRole(RoleIPBlock), PolicyTypes: ingress,
					Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
						IPBlock: &networkingv1.IPBlock{CIDR: all, Except: []string{e.ip(RoleClient) + host}}}}}}}
			},
			allowed: []probe{{RoleAllowed, RoleIPBlock, HTTPPort, "tcp"}},
			blocked: probe{RoleClient, RoleIPBlock, HTTPPort, "tcp"}},
		{name: "allow-port",
			spec: func(*Env) networkingv1.NetworkPolicySpec {
				return networkingv1.NetworkPolicySpec{PodSelector: selectRole(RolePort), PolicyTypes: ingress,
					Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
						{Protocol: tcp, Port: ptr.To(intstr.FromInt32(HTTPPort))}}}}}
			},
			allowed: []probe{{RoleClient, RolePort, HTTPPort, "tcp"}},
			blocked: probe{RoleClient, RolePort, UDPPort, "udp"}},
		{name: "allow-named-port",
			spec: func(*Env) networkingv1.NetworkPolicySpec {
				return networkingv1.NetworkPolicySpec{PodSelector: selectRole(RoleNamedPort), PolicyTypes: ingress,
					Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
						{Protocol: udp, Port: ptr.To(intstr.FromString(UDPPortName))}}}}}
			},
			allowed: []probe{{RoleClient, RoleNamedPort, UDPPort, "udp"}},
			blocked: probe{RoleClient, RoleNamedPort, HTTPPort, "tcp"}},
	}
}

func policyScenarios() []Scenario {
	var out []Scenario
	for _, c := range policyCases() {
		out = append(out, Scenario{Name: FamilyPolicy + "/" + c.name, Family: FamilyPolicy,
			Run: func(ctx context.Context, e *Env) Outcome { return runPolicyCase(ctx, e, c) }})
	}
	return out
}

// runPolicyCase checks that the connections work without the policy,
// applies it, waits (at most EnforceTimeout) until the negative control is
// blocked, checks the allowed connections and confirms the drop.
func runPolicyCase(ctx context.Context, e *Env, c policyCase) Outcome {
	if err := e.reachAll(ctx, append([]probe{c.blocked}, c.allowed...)); err != nil {
		return Failf("before the policy: %v", err)
	}
	dropNode := e.pod(c.blocked.to).Spec.NodeName
	direction := "ingress"
	if c.egress {
		dropNode, direction = e.pod(c.blocked.from).Spec.NodeName, "egress"
	}
	var before float64
	var confirmErr error
	if e.Confirm != nil {
		before, confirmErr = e.Confirm.Denied(ctx, dropNode, e.NS, c.name, direction)
	}
	pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: e.NS,
		Labels: map[string]string{LabelManagedBy: ManagedBy}}, Spec: c.spec(e)}
	if _, err := e.CS.NetworkingV1().NetworkPolicies(e.NS).Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		return Failf("creating NetworkPolicy %s/%s: %v", e.NS, c.name, err)
	}
	start := time.Now()
	enforced, err := e.awaitBlocked(ctx, c.blocked)
	if err != nil {
		return Failf("%v", err)
	}
	if !enforced {
		return Failf("negative control %s still connects %s after the policy was created", c.blocked, e.EnforceTimeout)
	}
	took := time.Since(start)
	if err := e.reachAll(ctx, c.allowed); err != nil {
		return Failf("with the policy: %v", err)
	}
	allowed := make([]string, len(c.allowed))
	for i, p := range c.allowed {
		allowed[i] = p.String()
	}
	what := fmt.Sprintf("enforced in %.1fs; blocked %s", took.Seconds(), c.blocked)
	if len(allowed) > 0 {
		what += "; allowed " + strings.Join(allowed, ", ")
	}
	switch {
	case e.Confirm == nil:
		return Passf("%s (drop not confirmed: the cluster runs no Trellis agent)", what)
	case confirmErr != nil:
		return Passf("%s (drop not confirmed: %v)", what, confirmErr)
	}
	return e.confirmDrop(ctx, what, dropNode, c.name, direction, before)
}

// confirmDrop waits (bounded) for the policy's deny counter on dropNode to
// grow past before.
func (e *Env) confirmDrop(ctx context.Context, what, node, policy, direction string, before float64) Outcome {
	wait := e.ConfirmTimeout
	if wait == 0 {
		// The agent reuses a read of the kernel counters for 5s.
		wait = 8 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		now, err := e.Confirm.Denied(ctx, node, e.NS, policy, direction)
		if err != nil {
			return Passf("%s (drop not confirmed: %v)", what, err)
		}
		if now > before {
			return Passf("%s; %s denied %.0f connection(s) on %s (%s)", what, policy, now-before, node, direction)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return Failf("%s, but the agent on %s counted no %s deny for %s/%s: not a policy drop", what, node, direction, e.NS, policy)
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Second, wait/4)):
		}
	}
}

// awaitBlocked probes p (BlockTimeout each) until it gets no answer,
// at most EnforceTimeout.
func (e *Env) awaitBlocked(ctx context.Context, p probe) (bool, error) {
	deadline := time.Now().Add(e.EnforceTimeout)
	var lastErr error
	for {
		b, err := e.blocked(ctx, p.from, e.ip(p.to), p.port, p.proto)
		if b {
			return true, nil
		}
		lastErr = err // a probe that did not run is tried again
		if time.Now().After(deadline) {
			if lastErr != nil {
				return false, fmt.Errorf("negative control %s: probe did not run: %w", p, lastErr)
			}
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// reachAll checks the probes concurrently.
func (e *Env) reachAll(ctx context.Context, probes []probe) error {
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = reachErr(e.reach(ctx, p.from, e.ip(p.to), p.port, p.proto))
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
