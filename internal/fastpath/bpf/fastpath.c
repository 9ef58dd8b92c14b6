// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Trellis fast path: established, non-NATed pod TCP flows (IPv4 and IPv6)
// skip the host's forwarding path (netfilter, routing decisions, one veth
// backlog hop).
//
// trellis_from_pod  tc ingress of a pod's host-side interface (trl...):
//                   packets the pod sends.
// trellis_to_pod    tc ingress of the node's uplinks (underlay device, the
//                   VXLAN device): packets for a local pod.
//
// A packet takes the fast path only when the kernel's own conntrack already
// holds its connection as confirmed, assured, ESTABLISHED and not NATed:
// the first packets of every connection (and every SYN, FIN and RST) cross
// the full host path, so NetworkPolicy, kube-proxy and masquerade see and
// decide every connection exactly as without the fast path; what is skipped
// is only the per-packet work the slow path would accept anyway
// ("ct state established accept"). The source address must be the one the
// pod owns (anti-spoofing), and the route and neighbour come from the kernel
// FIB (bpf_fib_lookup), so routing is the agent's and the plugin's routes.
// Anything unusual returns TC_ACT_UNSPEC: the packet continues on the
// normal path (and to any later tc filter).
//
// Both families take the same steps (each step takes the family as a
// constant): IPv6 segments with extension headers (fragments included) take
// the full path, and the hop limit is checked and decremented as IPv4's TTL
// (no header checksum). ICMPv6 (neighbour discovery, Packet Too Big) is
// never touched.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define BPF_F_CURRENT_NETNS (-1)

// Conntrack, as far as this program reads it (CO-RE: offsets come from the
// running kernel's BTF at load time).
struct ip_ct_tcp {
	__u8 state;
} __attribute__((preserve_access_index));

union nf_conntrack_proto {
	struct ip_ct_tcp tcp;
} __attribute__((preserve_access_index));

struct nf_conn {
	unsigned long status;
	__u32 mark; // CONFIG_NF_CONNTRACK_MARK
	union nf_conntrack_proto proto;
} __attribute__((preserve_access_index));

struct bpf_ct_opts___trellis {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple__sz,
					 struct bpf_ct_opts___trellis *opts, __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *ct, __u32 timeout) __ksym;

// enum ip_conntrack_status bits
#define IPS_SEEN_REPLY (1UL << 1)
#define IPS_ASSURED (1UL << 2)
#define IPS_CONFIRMED (1UL << 3)
#define IPS_SRC_NAT (1UL << 4)
#define IPS_DST_NAT (1UL << 5)
#define IPS_DYING (1UL << 9)
#define IPS_UNTRACKED (1UL << 12)
#define TCP_CONNTRACK_ESTABLISHED 3

// Interface kinds in the ifaces map.
#define IFACE_POD 1
#define IFACE_UPLINK 2

struct iface {
	__u32 kind;
	__be32 ipv4; // the pod's IPv4 address (IFACE_POD); 0: none
	// The interface's incarnation (the agent derives it from the interface
	// name, which names the pod's container): interface indexes are reused,
	// and a flow-cache entry holds only while the interfaces it was decided
	// for are still the ones of the same incarnation.
	__u32 gen;
	// The pod's IPv6 address (IFACE_POD), network order; all zero: none.
	__u8 ipv6[16] __attribute__((aligned(4)));
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); // ifindex
	__type(value, struct iface);
} ifaces SEC(".maps");

// Local pod addresses -> the ifindex of the pod's host interface: lets
// trellis_to_pod leave every packet not addressed to a local pod (the node's
// own traffic on the uplink) after one hash lookup, without a FIB lookup.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, __u32);
} pod_addrs SEC(".maps");

// The same for local pods' IPv6 addresses.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct in6_addr);
	__type(value, __u32);
} pod_addrs6 SEC(".maps");

struct settings { // the one value of the config map
	// Conntrack timeout refreshed on every fast-pathed packet, in ms
	// (nf_conntrack_tcp_timeout_established); 0 disables the fast path.
	__u32 ct_timeout_ms;
	// Connections whose conntrack mark has any of these bits set stay on
	// the full path (the operator's own netfilter rules see every packet);
	// 0 exempts none.
	__u32 exempt_ct_mark;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} config SEC(".maps");

// Counters (per CPU), indexed as internal/fastpath's Stat constants: IPv4
// packets at the index, IPv6 packets at STAT_V6 + the index.
enum {
	STAT_FROM_POD_REDIRECT = 0, // pod -> uplink
	STAT_FROM_POD_LOCAL,        // pod -> pod on the same node
	STAT_TO_POD_REDIRECT,       // uplink -> pod
	STAT_PASS_NO_CONNTRACK,
	STAT_PASS_NOT_ESTABLISHED,
	STAT_PASS_NAT,
	STAT_PASS_ROUTE,            // no FIB result with neighbour, or not an allowed egress
	STAT_PASS_SOURCE,           // source address is not the pod's
	STAT_PASS_MARK,             // conntrack mark exempted by the operator
	STAT_MAX,
};
#define STAT_V6 STAT_MAX

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline int count(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &k);
	if (v)
		*v += 1;
	return TC_ACT_UNSPEC;
}

// A TCP segment as the fast path reads it. Every function below takes the
// family as v6, a constant at each of its callers (the programs at the end
// call the steps once per family), so that each family compiles to straight
// code: ip is set for IPv4, ip6 for IPv6.
struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct ipv6hdr *ip6;
	struct tcphdr *tcp;
};

#define HDR4_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr))
#define HDR6_LEN (sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct tcphdr))
#define HDR_LEN(v6) ((v6) ? HDR6_LEN : HDR4_LEN)
// The family's offset in the stats map.
#define STAT_OFF(v6) ((v6) ? STAT_V6 : 0)

// parse finds a TCP segment whose flags carry no SYN, FIN or RST (those
// always take the full path; 1): IPv4 without IP options or fragmentation,
// IPv6 right after the fixed header (no extension header, hence no
// fragment). -1: not a candidate.
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p, const int v6)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + HDR_LEN(v6) > end)
		return -1;
	p->eth = data;
	if (v6) {
		p->ip6 = data + sizeof(struct ethhdr);
		p->tcp = data + sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
		if (p->eth->h_proto != bpf_htons(ETH_P_IPV6) || p->ip6->version != 6 || p->ip6->nexthdr != IPPROTO_TCP)
			return -1;
	} else {
		p->ip = data + sizeof(struct ethhdr);
		p->tcp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
		if (p->eth->h_proto != bpf_htons(ETH_P_IP) || p->ip->version != 4 || p->ip->ihl != 5 ||
		    p->ip->protocol != IPPROTO_TCP || (p->ip->frag_off & bpf_htons(0x3fff)))
			return -1;
	}
	if (p->tcp->syn || p->tcp->fin || p->tcp->rst)
		return 1;
	return 0;
}

// parse_pulled is parse, pulling the headers into the linear part first
// when they are not there yet.
static __always_inline int parse_pulled(struct __sk_buff *skb, struct pkt *p, const int v6)
{
	if (skb->protocol != bpf_htons(v6 ? ETH_P_IPV6 : ETH_P_IP))
		return -1;
	int r = parse(skb, p, v6);
	if (r >= 0)
		return r;
	if ((void *)(long)skb->data + HDR_LEN(v6) <= (void *)(long)skb->data_end)
		return -1; // headers were there: not a candidate
	if (bpf_skb_pull_data(skb, HDR_LEN(v6)))
		return -1;
	return parse(skb, p, v6);
}

// addr6_is reports whether the 16 bytes at a (4-byte aligned) hold b.
static __always_inline int addr6_is(const __u8 *a, const struct in6_addr *b)
{
	const __u32 *w = (const __u32 *)a;
	return w[0] == b->in6_u.u6_addr32[0] && w[1] == b->in6_u.u6_addr32[1] && w[2] == b->in6_u.u6_addr32[2] &&
	       w[3] == b->in6_u.u6_addr32[3];
}

static __always_inline int addr6_zero(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return !(w[0] | w[1] | w[2] | w[3]);
}

// hops_left is the packet's TTL (IPv4) or hop limit (IPv6).
static __always_inline __u8 hops_left(struct pkt *p, const int v6)
{
	return v6 ? p->ip6->hop_limit : p->ip->ttl;
}

// src_is reports whether the packet's source is the address of pod
// interface i. A pod's link-local IPv6 source (fe80::) never is: such
// segments take the full path.
static __always_inline int src_is(struct iface *i, struct pkt *p, const int v6)
{
	if (v6)
		return !addr6_zero(i->ipv6) && addr6_is(i->ipv6, &p->ip6->saddr);
	return i->ipv4 && i->ipv4 == p->ip->saddr;
}

// dst_is reports whether the packet's destination is the address of pod
// interface i.
static __always_inline int dst_is(struct iface *i, struct pkt *p, const int v6)
{
	if (v6)
		return addr6_is(i->ipv6, &p->ip6->daddr);
	return i->ipv4 == p->ip->daddr;
}

// local_pod is the host interface of the local pod the packet is addressed
// to (pod_addrs, pod_addrs6); NULL: none.
static __always_inline __u32 *local_pod(struct pkt *p, const int v6)
{
	if (v6) {
		struct in6_addr daddr;
		__builtin_memcpy(&daddr, &p->ip6->daddr, sizeof(daddr));
		return bpf_map_lookup_elem(&pod_addrs6, &daddr);
	}
	__be32 daddr = p->ip->daddr;
	return bpf_map_lookup_elem(&pod_addrs, &daddr);
}

// ct_check returns -1 when the connection of tuple t (tuple_sz: the size of
// its ipv4 or ipv6 member, which tells conntrack the family) may take the
// fast path, else the counter saying why not. It refreshes the entry's
// timeout as the slow path would.
static __always_inline int ct_check(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tuple_sz)
{
	struct bpf_ct_opts___trellis opts = {.netns_id = BPF_F_CURRENT_NETNS, .l4proto = IPPROTO_TCP};
	__u32 zero = 0;
	struct settings *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !cfg->ct_timeout_ms)
		return STAT_PASS_NO_CONNTRACK;
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, t, tuple_sz, &opts, sizeof(opts));
	if (!ct)
		return STAT_PASS_NO_CONNTRACK;
	int why = -1;
	unsigned long st = ct->status;
	const unsigned long want = IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED;
	if ((st & want) != want || (st & (IPS_DYING | IPS_UNTRACKED)) ||
	    ct->proto.tcp.state != TCP_CONNTRACK_ESTABLISHED)
		why = STAT_PASS_NOT_ESTABLISHED;
	else if (st & (IPS_SRC_NAT | IPS_DST_NAT))
		why = STAT_PASS_NAT;
	else if (cfg->exempt_ct_mark && (!bpf_core_field_exists(ct->mark) || (ct->mark & cfg->exempt_ct_mark)))
		why = STAT_PASS_MARK; // (a kernel without conntrack marks exempts everything)
	else
		bpf_ct_change_timeout(ct, cfg->ct_timeout_ms);
	bpf_ct_release(ct);
	return why;
}

// conntrack_ok is ct_check of the packet's connection.
static __always_inline int conntrack_ok(struct __sk_buff *skb, struct pkt *p, const int v6)
{
	struct bpf_sock_tuple t = {};
	if (v6) {
		__builtin_memcpy(t.ipv6.saddr, &p->ip6->saddr, sizeof(t.ipv6.saddr));
		__builtin_memcpy(t.ipv6.daddr, &p->ip6->daddr, sizeof(t.ipv6.daddr));
		t.ipv6.sport = p->tcp->source;
		t.ipv6.dport = p->tcp->dest;
		return ct_check(skb, &t, sizeof(t.ipv6));
	}
	t.ipv4.saddr = p->ip->saddr;
	t.ipv4.daddr = p->ip->daddr;
	t.ipv4.sport = p->tcp->source;
	t.ipv4.dport = p->tcp->dest;
	return ct_check(skb, &t, sizeof(t.ipv4));
}

static __always_inline int lookup(struct __sk_buff *skb, struct pkt *p, struct bpf_fib_lookup *fib, const int v6)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->l4_protocol = IPPROTO_TCP;
	fib->sport = p->tcp->source;
	fib->dport = p->tcp->dest;
	fib->ifindex = skb->ingress_ifindex;
	if (v6) {
		fib->family = AF_INET6;
		// Traffic class and flow label, as the kernel's own lookup uses them.
		fib->flowinfo = *(__be32 *)p->ip6 & bpf_htonl(0x0FFFFFFF);
		__builtin_memcpy(fib->ipv6_src, &p->ip6->saddr, sizeof(fib->ipv6_src));
		__builtin_memcpy(fib->ipv6_dst, &p->ip6->daddr, sizeof(fib->ipv6_dst));
	} else {
		fib->family = AF_INET;
		fib->tos = p->ip->tos;
		fib->ipv4_src = p->ip->saddr;
		fib->ipv4_dst = p->ip->daddr;
	}
	// tot_len 0: the kernel checks the egress MTU against the skb (GSO
	// aware); a segment too big takes the full path, which sends the ICMP
	// error (Fragmentation Needed, Packet Too Big).
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

// The flow cache: a connection's verdict (conntrack established and not
// NATed, route, neighbour MACs) per direction and ingress interface, reused
// for FLOW_TTL_NS before conntrack and the FIB are asked again; flows for
// IPv4, flows6 for IPv6. FIN and RST (which always take the full path) drop
// the entry at once. An entry holds only while its output interface (and,
// from a pod, its input interface) has an ifaces entry of the incarnation
// it was decided for: an index the kernel reused for a new pod's interface,
// or one whose entry the agent deleted, sends the packet to the full checks.
#define FLOW_TTL_NS (100ULL * 1000 * 1000)

struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 in;
};

struct flow_key6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u32 in;
};

struct flow_val {
	__u64 until;
	__u32 out;
	__u32 stat;    // the counter of this redirect, which also says how
	__u32 in_gen;  // ifaces[in].gen when decided (trellis_from_pod; else 0)
	__u32 out_gen; // ifaces[out].gen when decided
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key6);
	__type(value, struct flow_val);
} flows6 SEC(".maps");

#define FLOWS(v6) ((v6) ? (void *)&flows6 : (void *)&flows)

// A flow key of either family (zeroed whole, so the hash sees no stray
// bytes).
union flow_keys {
	struct flow_key k4;
	struct flow_key6 k6;
};

static __always_inline void flow_key(union flow_keys *k, struct pkt *p, __u32 in, const int v6)
{
	if (v6) {
		__builtin_memcpy(k->k6.saddr, &p->ip6->saddr, sizeof(k->k6.saddr));
		__builtin_memcpy(k->k6.daddr, &p->ip6->daddr, sizeof(k->k6.daddr));
		k->k6.sport = p->tcp->source;
		k->k6.dport = p->tcp->dest;
		k->k6.in = in;
		return;
	}
	k->k4.saddr = p->ip->saddr;
	k->k4.daddr = p->ip->daddr;
	k->k4.sport = p->tcp->source;
	k->k4.dport = p->tcp->dest;
	k->k4.in = in;
}

static __always_inline void forget(struct pkt *p, __u32 in, const int v6)
{
	union flow_keys k = {};
	flow_key(&k, p, in, v6);
	bpf_map_delete_elem(FLOWS(v6), &k);
}

// do_redirect counts the redirect (stat, at offset off: 0 or STAT_V6) and
// redirects to out.
static __always_inline int do_redirect(__u32 out, __u32 stat, __u32 off)
{
	count(off + stat);
	if (stat == STAT_FROM_POD_REDIRECT)
		return bpf_redirect(out, 0);
	return bpf_redirect_peer(out, 0);
}

// rewrite sets the MACs of the next hop and takes one hop off the TTL
// (with IPv4's header checksum) or the hop limit.
static __always_inline void rewrite(struct pkt *p, const __u8 *smac, const __u8 *dmac, const int v6)
{
	__builtin_memcpy(p->eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, smac, ETH_ALEN);
	if (v6) {
		p->ip6->hop_limit--;
		return;
	}
	__u32 check = p->ip->check;
	check += bpf_htons(0x0100);
	p->ip->check = (__u16)(check + (check >= 0xFFFF));
	p->ip->ttl--;
}

// cached redirects the packet by its flow's cached verdict; -1: no fresh
// entry for the current incarnations of the interfaces (in_gen: the input
// interface's, as the caller looked it up; 0 from an uplink).
static __always_inline int cached(struct pkt *p, __u32 in, __u32 in_gen, const int v6)
{
	union flow_keys k = {};
	flow_key(&k, p, in, v6);
	struct flow_val *v = bpf_map_lookup_elem(FLOWS(v6), &k);
	if (!v || bpf_ktime_get_coarse_ns() > v->until || v->in_gen != in_gen)
		return -1;
	__u32 out = v->out;
	struct iface *dst = bpf_map_lookup_elem(&ifaces, &out);
	if (!dst || dst->gen != v->out_gen)
		return -1;
	rewrite(p, v->smac, v->dmac, v6);
	return do_redirect(out, v->stat, STAT_OFF(v6));
}

static __always_inline int remember_and_redirect(struct pkt *p, __u32 in, __u32 in_gen, __u32 out, __u32 out_gen,
						 __u32 stat, struct bpf_fib_lookup *fib, const int v6)
{
	union flow_keys k = {};
	flow_key(&k, p, in, v6);
	struct flow_val v = {.until = bpf_ktime_get_coarse_ns() + FLOW_TTL_NS,
			     .out = out,
			     .stat = stat,
			     .in_gen = in_gen,
			     .out_gen = out_gen};
	__builtin_memcpy(v.smac, fib->smac, ETH_ALEN);
	__builtin_memcpy(v.dmac, fib->dmac, ETH_ALEN);
	bpf_map_update_elem(FLOWS(v6), &k, &v, BPF_ANY);
	return do_redirect(out, stat, STAT_OFF(v6));
}

// prepare checks conntrack and, when the packet may take the fast path,
// rewrites it for its next hop (MACs from the FIB, TTL). Non-zero: leave the
// packet to the full path (counted).
static __always_inline int prepare(struct __sk_buff *skb, struct pkt *p, struct bpf_fib_lookup *fib, const int v6)
{
	int why = conntrack_ok(skb, p, v6);
	if (why >= 0)
		return count(STAT_OFF(v6) + why) | 1;
	// Re-derive the packet pointers for the verifier after the kfunc calls.
	if (parse(skb, p, v6))
		return 1;
	rewrite(p, fib->smac, fib->dmac, v6);
	return 0;
}

static __always_inline int from_pod(struct __sk_buff *skb, const int v6)
{
	struct pkt p;
	__u32 in = skb->ingress_ifindex;
	int r = parse_pulled(skb, &p, v6);
	if (r == 1)
		forget(&p, in, v6);
	if (r)
		return TC_ACT_UNSPEC;
	struct iface *src = bpf_map_lookup_elem(&ifaces, &in);
	if (!src || src->kind != IFACE_POD || !src_is(src, &p, v6))
		return count(STAT_OFF(v6) + STAT_PASS_SOURCE);
	if (hops_left(&p, v6) <= 1)
		return count(STAT_OFF(v6) + STAT_PASS_ROUTE);
	__u32 in_gen = src->gen;
	r = cached(&p, in, in_gen, v6);
	if (r >= 0)
		return r;
	struct bpf_fib_lookup fib;
	if (lookup(skb, &p, &fib, v6) != BPF_FIB_LKUP_RET_SUCCESS)
		return count(STAT_OFF(v6) + STAT_PASS_ROUTE);
	__u32 out = fib.ifindex;
	struct iface *dst = bpf_map_lookup_elem(&ifaces, &out);
	if (!dst || out == in)
		return count(STAT_OFF(v6) + STAT_PASS_ROUTE);
	__u32 stat = dst->kind == IFACE_POD ? STAT_FROM_POD_LOCAL : STAT_FROM_POD_REDIRECT;
	__u32 out_gen = dst->gen;
	if (prepare(skb, &p, &fib, v6))
		return TC_ACT_UNSPEC;
	return remember_and_redirect(&p, in, in_gen, out, out_gen, stat, &fib, v6);
}

static __always_inline int to_pod(struct __sk_buff *skb, const int v6)
{
	struct pkt p;
	__u32 in = skb->ingress_ifindex;
	int r = parse_pulled(skb, &p, v6);
	if (r == 1)
		forget(&p, in, v6);
	if (r)
		return TC_ACT_UNSPEC;
	__u32 *pod = local_pod(&p, v6);
	if (!pod)
		return TC_ACT_UNSPEC; // not for a local pod
	if (hops_left(&p, v6) <= 1)
		return TC_ACT_UNSPEC;
	r = cached(&p, in, 0, v6);
	if (r >= 0)
		return r;
	struct bpf_fib_lookup fib;
	if (lookup(skb, &p, &fib, v6) != BPF_FIB_LKUP_RET_SUCCESS)
		return count(STAT_OFF(v6) + STAT_PASS_ROUTE);
	__u32 out = fib.ifindex;
	struct iface *dst = bpf_map_lookup_elem(&ifaces, &out);
	if (out != *pod || !dst || dst->kind != IFACE_POD || !dst_is(dst, &p, v6))
		return count(STAT_OFF(v6) + STAT_PASS_ROUTE);
	__u32 out_gen = dst->gen;
	if (prepare(skb, &p, &fib, v6))
		return TC_ACT_UNSPEC;
	return remember_and_redirect(&p, in, 0, out, out_gen, STAT_TO_POD_REDIRECT, &fib, v6);
}

SEC("tc")
int trellis_from_pod(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return from_pod(skb, 1);
	return from_pod(skb, 0);
}

SEC("tc")
int trellis_to_pod(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return to_pod(skb, 1);
	return to_pod(skb, 0);
}
