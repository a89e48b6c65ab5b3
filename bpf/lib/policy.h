/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kubernetes NetworkPolicy, enforced from maps the agent writes
 * (src/dataplane/bpf/policy-maps.ts); no program is generated per policy
 * or per endpoint.
 *
 *  - bpfproxy_ipcache: address -> identity, longest prefix first. A local
 *    endpoint's own addresses also carry its endpoint id and whether it is
 *    isolated for ingress and for egress, so isolation costs no extra
 *    lookup.
 *  - bpfproxy_policy: endpoint id -> that endpoint's rule table, an LPM trie
 *    keyed {peer identity, direction, protocol, port prefix}. A decision is
 *    two trie lookups, at the peer's identity and at IDENTITY_ANY: a deny
 *    wins, then an allow; nothing in an isolated direction denies. (Within
 *    one identity the longest prefix decides; the agent writes a narrower
 *    allow under a wider deny as a deny.)
 *  - bpfproxy_pol_state: the generation and whether anything is isolated at
 *    all. With nothing isolated every path costs that one array lookup.
 *
 * Where (each path that delivers a packet into a local pod is checked for
 * that pod's ingress, each packet from a local pod for its egress):
 *  - a new service flow (lib/service.h service_new()), after the backend is
 *    chosen: the client's egress against the backend's address and target
 *    port, the backend's ingress against the client's address as the
 *    backend will see it (the real one unless SNAT'd). This covers
 *    bpf_redirect_peer and FIB redirects into pods, which skip the pod
 *    veth's egress hook;
 *  - a new flow to no service from a pod (tc_pod): policy_plain();
 *  - anything the kernel routes into a pod (from data or tunnel interfaces,
 *    from the host, from other pods): the pod veth's egress program
 *    (tc_to_pod.c, policy_to_pod()).
 * The decision is kept in the flow's conntrack entries (both halves) with
 * the generation it was taken at; a packet of a tracked flow costs one
 * compare, and a flow is checked again when the generation moved, so a
 * removed rule cuts the flows it allowed. Replies of allowed flows pass;
 * flows to no service are tracked (CT_F_PLAIN) when one of their ends is
 * an isolated local endpoint. A packet checked on its way in (redirect,
 * tc_pod) finds its flow's entry again at the veth egress, already
 * decided: it is neither checked nor counted twice.
 *
 * Fails closed: an isolated endpoint without a table drops (policy-no-
 * table); TCP without SYN of no known flow to or from an isolated endpoint
 * drops (policy-unknown-flow), except from the node itself. Always let
 * through: traffic from the node (HOST identity) into its pods, a pod
 * reaching itself through a service (hairpin), ICMP errors about a tracked
 * flow, and non-first fragments (no ports to check; without the first
 * fragment, which is checked, they cannot be reassembled).
 */
#ifndef BPFPROXY_POLICY_H
#define BPFPROXY_POLICY_H

#include "common.h"
#include "conntrack.h"
#include "drop.h"
#include "nat.h"
#include "parse.h"
#include "trace.h"

/* agent: src/dataplane/bpf/policy-maps.ts (TABLE_MAX_ENTRIES, RULES_MAX) */
#define POL_TABLE_MAX	  16384
#define POL_RULES_MAX	  65536
#define POL_ENDPOINTS_MAX 16384

/* One endpoint's rules; the agent creates one per endpoint and swaps it
 * into bpfproxy_policy in one update (make-before-break). */
struct pol_table {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POL_TABLE_MAX);
	__type(key, struct pol_key);
	__type(value, struct pol_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	/* Every pod address of the cluster may have an entry: Cilium's
	 * ipcache size. Not preallocated: entries cost memory as written. */
	__uint(max_entries, 524288);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, POL_ENDPOINTS_MAX);
	__type(key, __u32); /* endpoint id */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct pol_table); /* last: a flexible array */
} bpfproxy_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pol_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_pol_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, POL_RULES_MAX);
	__type(key, __u32);
	__type(value, struct rule_hits);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_pol_hits SEC(".maps");

/* For operators and for adoption after a restart; never read here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POL_RULES_MAX);
	__type(key, __u32);
	__type(value, struct pol_rule_name);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_pol_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POL_ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, struct pol_ep_name);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_pol_eps SEC(".maps");

/* Types only reached through an inner map's definition: clang would
 * leave them as forward declarations in BTF, and libbpf could not size
 * the inner map. Never read. */
const volatile struct {
	struct pol_key	 key;
	struct pol_value value;
} bpfproxy_policy_btf;

/* The generation decisions are taken at, or 0 when no endpoint is
 * isolated (nothing to enforce). */
static __always_inline __u32 pol_active_gen(void)
{
	__u32		  k = 0;
	struct pol_state *s = bpf_map_lookup_elem(&bpfproxy_pol_state, &k);

	if (!s || !s->isolated)
		return 0;
	return s->generation ? s->generation : 1;
}

/* One end of a flow as the ipcache knows it. flags are set for local
 * endpoints only. */
struct pol_end {
	__u32 identity;
	__u32 endpoint;
	__u8  flags;
};

static __always_inline void pol_resolve(__be32 addr, struct pol_end *e)
{
	struct ipcache_key    k = {.prefixlen = 32, .addr = addr};
	struct ipcache_value *v = bpf_map_lookup_elem(&bpfproxy_ipcache, &k);

	if (!v) {
		e->identity = IDENTITY_WORLD;
		e->endpoint = 0;
		e->flags    = 0;
		return;
	}
	e->identity = v->identity;
	e->endpoint = v->endpoint;
	e->flags    = v->endpoint ? v->flags & (IPC_F_INGRESS_ISO | IPC_F_EGRESS_ISO) : 0;
}

static __always_inline void pol_count_hit(__u32 rule)
{
	struct rule_hits *h;

	if (cfg_trace) /* lib/trace.h: no map writes */
		return;
	h = bpf_map_lookup_elem(&bpfproxy_pol_hits, &rule);
	if (h)
		h->hits++;
}

/* The deciding rule of one endpoint's table, for `bpfproxy trace`. */
static __always_inline int pol_traced(int verdict, __u32 ep, __u8 dir, __u32 rule)
{
	trace_step(TRACE_POLICY, verdict == POL_ALLOW ? MON_VERDICT_ALLOW : MON_VERDICT_DENY,
		   dir == POL_DIR_INGRESS ? MON_DIR_INGRESS : MON_DIR_EGRESS, 0, rule, ep, 0, 0, 0);
	return verdict;
}

#define POL_NO_TABLE 0

/* One endpoint in one direction: POL_ALLOW, POL_DENY (a deny rule, or no
 * rule allows) or POL_NO_TABLE. The deciding rule is counted. */
static __always_inline int pol_table_verdict(__u32 ep, __u32 peer, __u8 dir, __u8 proto,
					     __be16 port)
{
	struct pol_key k = {
		.prefixlen = 64,
		.identity  = bpf_htonl(peer),
		.dir	   = dir,
		.proto	   = proto,
		.port	   = port,
	};
	struct pol_value *exact = NULL, *any;
	void		 *tbl	= bpf_map_lookup_elem(&bpfproxy_policy, &ep);

	if (!tbl)
		return pol_traced(POL_NO_TABLE, ep, dir, 0);
	if (peer != IDENTITY_ANY) {
		exact = bpf_map_lookup_elem(tbl, &k);
		if (exact && exact->verdict != POL_ALLOW) {
			pol_count_hit(exact->rule_id);
			return pol_traced(POL_DENY, ep, dir, exact->rule_id);
		}
	}
	k.identity = bpf_htonl(IDENTITY_ANY);
	any	   = bpf_map_lookup_elem(tbl, &k);
	if (any && any->verdict != POL_ALLOW) {
		pol_count_hit(any->rule_id);
		return pol_traced(POL_DENY, ep, dir, any->rule_id);
	}
	if (exact) {
		pol_count_hit(exact->rule_id);
		return pol_traced(POL_ALLOW, ep, dir, exact->rule_id);
	}
	if (any) {
		pol_count_hit(any->rule_id);
		return pol_traced(POL_ALLOW, ep, dir, any->rule_id);
	}
	return pol_traced(POL_DENY, ep, dir, 0);
}

static __always_inline enum reason pol_reason(int verdict)
{
	if (verdict == POL_ALLOW)
		return REASON_NONE;
	return verdict == POL_NO_TABLE ? REASON_POLICY_NO_TABLE : REASON_POLICY_DENIED;
}

/* The flow client -> server:dport (after service translation) with both
 * ends resolved: the client's egress, then the server's ingress from
 * seen_id (the identity of the client's address as the server sees it).
 * self: the client is the server (hairpin), which policy never blocks. */
static __always_inline enum reason pol_decide(const struct pol_end *c, const struct pol_end *s,
					      __u32 seen_id, __u8 proto, __be16 dport, int self)
{
	enum reason r;

	if (self)
		return REASON_NONE;
	if (c->flags & IPC_F_EGRESS_ISO) {
		r = pol_reason(
			pol_table_verdict(c->endpoint, s->identity, POL_DIR_EGRESS, proto, dport));
		if (r != REASON_NONE)
			return r;
	}
	if ((s->flags & IPC_F_INGRESS_ISO) && seen_id != IDENTITY_HOST)
		return pol_reason(
			pol_table_verdict(s->endpoint, seen_id, POL_DIR_INGRESS, proto, dport));
	return REASON_NONE;
}

/* A flow in its opening direction, after translation. */
struct pol_flow {
	__be32 client; /* real address of the client */
	__be32 seen;   /* the client's address as the server sees it */
	__be32 server;
	__be16 dport;
	__u8   proto;
	__u8   self;
};

static __always_inline enum reason pol_check_flow(const struct pol_flow *f)
{
	struct pol_end c, s, x;
	__u32	       seen_id;

	pol_resolve(f->client, &c);
	pol_resolve(f->server, &s);
	if (!(c.flags & IPC_F_EGRESS_ISO) && !(s.flags & IPC_F_INGRESS_ISO))
		return REASON_NONE;
	seen_id = c.identity;
	if (f->seen != f->client && (s.flags & IPC_F_INGRESS_ISO)) {
		pol_resolve(f->seen, &x);
		seen_id = x.identity;
	}
	return pol_decide(&c, &s, seen_id, f->proto, f->dport,
			  f->self || (c.endpoint && c.endpoint == s.endpoint));
}

/* The opening direction of the flow a conntrack entry belongs to: a
 * forward entry is keyed by the client's tuple and translates to the
 * server; a reply entry is keyed by the server's reply and translates back
 * to the client. */
static __always_inline void pol_flow_of(const struct ct_key *k, const struct ct_value *v,
					struct pol_flow *f)
{
	if (v->dir == CT_DIR_FWD) {
		f->client = k->saddr;
		f->seen	  = v->nat_saddr;
		f->server = v->nat_daddr;
		f->dport  = v->nat_dport;
	} else {
		f->client = v->nat_daddr;
		f->seen	  = k->daddr;
		f->server = k->saddr;
		f->dport  = k->sport;
	}
	f->proto = k->proto;
	f->self	 = !!(v->flags & CT_F_HAIRPIN);
}

/* A packet of a tracked flow (k: the entry's key): REASON_NONE to go on,
 * or why to drop it. The decision taken at this generation stands; one
 * taken at an older one is taken again and recorded in both halves. */
static __always_inline enum reason policy_ct(const struct ct_key *k, struct ct_value *v)
{
	__u32		gen = pol_active_gen();
	struct pol_flow f;
	enum reason	r;

	if (!gen)
		return REASON_NONE;
	if (v->pol_gen == gen)
		return (v->flags & CT_F_POL_DENIED) ? REASON_POLICY_DENIED : REASON_NONE;
	pol_flow_of(k, v, &f);
	r = pol_check_flow(&f);
	ct_set_policy(k, v, gen, r != REASON_NONE);
	return r;
}

/* A new service flow: fwd as the client sent it, 'to' after translation.
 * Returns why to drop it, or REASON_NONE with *gen the generation to
 * record in its conntrack entries (0: nothing to enforce). */
static __always_inline enum reason
policy_service_new(const struct ct_key *fwd, const struct ct_key *to, __u8 ct_flags, __u32 *gen)
{
	struct pol_flow f = {
		.client = fwd->saddr,
		.seen	= to->saddr,
		.server = to->daddr,
		.dport	= to->dport,
		.proto	= to->proto,
		.self	= !!(ct_flags & CT_F_HAIRPIN),
	};

	*gen = pol_active_gen();
	if (!*gen)
		return REASON_NONE;
	return pol_check_flow(&f);
}

/* Ports of protocols the service datapath does not parse (SCTP: the same
 * place as TCP and UDP); 0 for the others. Returns -1 when the header is
 * cut short. */
static __always_inline int pol_other_ports(struct __sk_buff *skb, struct pkt *p)
{
	__be16 ports[2];

	if (p->tuple.proto != IPPROTO_SCTP)
		return 0;
	if ((__u32)p->tot_len + ETH_HLEN > skb->len || p->tot_len < p->ihl_bytes + 12)
		return -1;
	if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)))
		return -1;
	p->tuple.sport = ports[0];
	p->tuple.dport = ports[1];
	return 0;
}

/* An ICMP error about a tracked flow (either direction of it). */
static __always_inline int pol_icmp_related(struct __sk_buff *skb, const struct pkt *p, __u64 now)
{
	struct icmp_quote e = {};
	struct ct_key	  rk;

	if (p->tuple.proto != IPPROTO_ICMP || icmp_err_parse(skb, p, &e))
		return 0;
	if (ct_lookup(&e.inner, now))
		return 1;
	ct_reverse(&e.inner, &rk);
	return ct_lookup(&rk, now) != NULL;
}

/* A packet of no tracked flow whose ends c and s are resolved, one of them
 * an isolated local endpoint: decide, and track the flow when it may open
 * one so that its replies pass. */
static __always_inline int pol_new_flow(struct __sk_buff *skb, const struct pkt *p,
					const struct pol_end *c, const struct pol_end *s, __u32 gen,
					__u64 now)
{
	enum reason r;
	int	    err;

	/* A pod reaching itself: never blocked, and nothing to track (its
	 * replies are its own again; the tuple may be its own reverse). */
	if (c->endpoint && c->endpoint == s->endpoint)
		return TC_ACT_OK;
	if (!ct_opens_flow(p->tuple.proto, p->tcp_flags)) {
		if ((c->flags & IPC_F_EGRESS_ISO) ||
		    ((s->flags & IPC_F_INGRESS_ISO) && c->identity != IDENTITY_HOST))
			return drop(skb, REASON_POLICY_UNKNOWN_FLOW);
		return TC_ACT_OK;
	}
	r = pol_decide(c, s, c->identity, p->tuple.proto, p->tuple.dport, 0);
	if (r != REASON_NONE)
		return drop(skb, r);
	err = ct_create(&p->tuple, &p->tuple, CT_F_PLAIN, 0, gen, now);
	if (err)
		return drop(skb, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	return TC_ACT_OK;
}

/* Its reverse is tracked: the packet belongs to that flow (a reply, or a
 * translated flow's packet seen after its translation). */
static __always_inline int pol_reverse_known(struct __sk_buff *skb, const struct pkt *p, __u64 now,
					     int *rc)
{
	struct ct_key	 rk;
	struct ct_value *ct;
	enum reason	 r;

	ct_reverse(&p->tuple, &rk);
	ct = ct_lookup(&rk, now);
	if (!ct)
		return 0;
	r   = policy_ct(&rk, ct);
	*rc = r == REASON_NONE ? TC_ACT_OK : drop(skb, r);
	return 1;
}

/* From a pod, to no service (tc_pod): the pod's egress and, when the
 * destination is a local pod, its ingress. looked_up: the caller already
 * looked the tuple up in conntrack and found nothing. */
static __always_inline int policy_plain(struct __sk_buff *skb, const struct pkt *p, int looked_up)
{
	__u32		 gen = pol_active_gen();
	struct pol_end	 c, s;
	struct ct_value *ct;
	enum reason	 r;
	__u64		 now;
	int		 rc;

	if (!gen)
		return TC_ACT_OK;
	pol_resolve(p->tuple.saddr, &c);
	pol_resolve(p->tuple.daddr, &s);
	if (!c.flags && !s.flags)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	if (!looked_up) {
		ct = ct_lookup(&p->tuple, now);
		if (ct) {
			r = policy_ct(&p->tuple, ct);
			if (r != REASON_NONE)
				return drop(skb, r);
			ct_update(&p->tuple, ct, p->tcp_flags, now);
			return TC_ACT_OK;
		}
	}
	if (pol_reverse_known(skb, p, now, &rc))
		return rc;
	return pol_new_flow(skb, p, &c, &s, gen, now);
}

/* TC egress of a pod veth: whatever the kernel routes into the pod (from
 * data or tunnel interfaces, from the host, from other pods) and whatever
 * we redirected there without bpf_redirect_peer. Only the destination's
 * ingress is checked here: sources on this node were checked as they left
 * their pod. */
static __always_inline int policy_to_pod(struct __sk_buff *skb, struct pkt *p, enum parse_result pr)
{
	__u32		 gen = pol_active_gen();
	struct pol_end	 c, s;
	struct ct_value *ct;
	enum reason	 r;
	__u64		 now;
	int		 rc;

	if (!gen)
		return TC_ACT_OK;
	pol_resolve(p->tuple.daddr, &s);
	if (!s.flags)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	if (pr == PARSE_NOT_L4 && pol_other_ports(skb, p))
		return drop(skb, REASON_MALFORMED);
	ct = ct_lookup(&p->tuple, now);
	if (ct) {
		r = policy_ct(&p->tuple, ct);
		if (r != REASON_NONE)
			return drop(skb, r);
		/* The only hook some flows pass in this direction (from the
		 * host, from tunnels): keep their state. */
		if (ct->flags & CT_F_PLAIN)
			ct_update(&p->tuple, ct, p->tcp_flags, now);
		return TC_ACT_OK;
	}
	if (pol_reverse_known(skb, p, now, &rc))
		return rc;
	if (pol_icmp_related(skb, p, now))
		return TC_ACT_OK;
	pol_resolve(p->tuple.saddr, &c);
	return pol_new_flow(skb, p, &c, &s, gen, now);
}

#endif /* BPFPROXY_POLICY_H */
