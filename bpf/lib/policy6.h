/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NetworkPolicy for IPv6: lib/policy.h's rules over IPv6 addresses. The
 * rule tables (bpfproxy_policy), the generation (bpfproxy_pol_state), the
 * hit counters and the identities are shared with IPv4 (ports and
 * protocols are family neutral; a pod with addresses in both families has
 * one identity per family, selected by the same selectors); only the
 * address -> identity map is the family's own, bpfproxy_ipcache6 (::/0 is
 * IDENTITY_WORLD6, so an ipBlock of one family never matches the other's
 * unknown addresses). The decision is kept in bpfproxy_ct6 entries with
 * the generation it was taken at, as for IPv4.
 *
 * Where (as for IPv4):
 *  - a new IPv6 service flow (lib/service6.h service6_packet(), once
 *    service6_new() chose the backend and created its entries, which a
 *    denied flow has removed again), and every packet of a tracked flow whose decision
 *    is older than the generation (service6_packet());
 *  - a new flow to no service from a pod (tc_pod): policy6_plain();
 *  - anything the kernel routes into a pod: its veth's egress program
 *    (tc_to_pod.c): policy6_to_pod().
 * Neighbour discovery (ICMPv6 133..137) always passes: the pod's IPv6
 * stack needs it. Replies of allowed flows pass, ICMPv6 errors about a
 * tracked flow pass, traffic from the node's IPv6 addresses is allowed by
 * the node rule each isolated endpoint's table carries.
 *
 * Fails closed where the IPv6 state is missing: a pod whose own IPv6
 * address (the source of what it sends, the destination of what it
 * receives) is no endpoint of bpfproxy_ipcache6 is still recognised by
 * its interface (bpfproxy_pod_addrs: the IPv4 address of a /32 route to
 * its veth, whose ipcache entry says whether it is isolated); isolated in
 * that direction, its IPv6 but neighbour discovery is dropped as
 * policy-ipv6 (policy6_pod()). That covers addresses the API server does
 * not list in status.podIPs (and link-local ones other than ND).
 */
#ifndef BPFPROXY_POLICY6_H
#define BPFPROXY_POLICY6_H

#include "common.h"
#include "conntrack6.h"
#include "drop.h"
#include "mode.h"
#include "nat6.h"
#include "parse6.h"
#include "pod.h"
#include "policy.h"
#include "types6.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	/* as bpfproxy_ipcache */
	__uint(max_entries, 524288);
	__type(key, struct ipcache6_key);
	__type(value, struct ipcache_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_ipcache6 SEC(".maps");

/* ICMPv6 types of neighbour discovery (RFC 4861): 133 router
 * solicitation, 134 router advertisement, 135 neighbour solicitation, 136
 * neighbour advertisement, 137 redirect. */
static __always_inline int icmp6_is_nd(__u8 type)
{
	return type >= 133 && type <= 137;
}

static __always_inline void pol6_resolve(const union v6addr *addr, struct pol_end *e)
{
	struct ipcache6_key   k = {.prefixlen = 128, .addr = *addr};
	struct ipcache_value *v = bpf_map_lookup_elem(&bpfproxy_ipcache6, &k);

	if (!v) {
		e->identity = IDENTITY_WORLD6;
		e->endpoint = 0;
		e->flags    = 0;
		return;
	}
	e->identity = v->identity;
	e->endpoint = v->endpoint;
	e->flags    = v->endpoint ? v->flags & (IPC_F_INGRESS_ISO | IPC_F_EGRESS_ISO) : 0;
}

/* 1 when the pod behind ifindex, recognised by its IPv4 address
 * (bpfproxy_pod_addrs), is isolated in the direction iso. */
static __always_inline int pol6_pod_isolated(__u32 ifindex, __u32 iso)
{
	struct pod_if_key k = {.ifindex = ifindex};
	struct pod_addr	 *a;
	struct pol_end	  e;

	a = bpf_map_lookup_elem(&bpfproxy_pod_addrs, &k);
	if (!a)
		return 0;
	pol_resolve(a->addr4, &e);
	return (e.flags & iso) != 0;
}

/* The pod's own IPv6 address own is no endpoint of bpfproxy_ipcache6 while
 * the pod behind ifindex is isolated in the direction iso (by its IPv4
 * address): its policy is unknown, fail closed. */
static __noinline int pol6_unknown_isolated(__u32 ifindex, const union v6addr *own, __u32 iso)
{
	struct pol_end e;

	if (!pol_active_gen())
		return 0;
	pol6_resolve(own, &e);
	if (e.endpoint)
		return 0;
	return pol6_pod_isolated(ifindex, iso);
}

/* A flow in its opening direction, as pol_check_flow(): the client's real
 * address, its address as the server sees it, the server's. Pointers, not
 * copies: the frames that call this are on a deep call chain. */
static __always_inline enum reason pol6_check_flow(const union v6addr *client,
						   const union v6addr *seen,
						   const union v6addr *server, __be16 dport,
						   __u8 proto, int self)
{
	struct pol_end c, s;
	__u32	       seen_id;

	pol6_resolve(client, &c);
	pol6_resolve(server, &s);
	if (!(c.flags & IPC_F_EGRESS_ISO) && !(s.flags & IPC_F_INGRESS_ISO))
		return REASON_NONE;
	seen_id = c.identity;
	if (!v6_eq(seen, client) && (s.flags & IPC_F_INGRESS_ISO)) {
		struct pol_end x;

		pol6_resolve(seen, &x);
		seen_id = x.identity;
	}
	return pol_decide(&c, &s, seen_id, proto, dport,
			  self || (c.endpoint && c.endpoint == s.endpoint));
}

/* Record the decision in both halves of the flow (as ct_set_policy()). */
static __always_inline void ct6_set_policy(const struct ct6_key *k, struct ct6_value *v, __u32 gen,
					   int denied)
{
	struct ct6_key	  pk;
	struct ct6_value *peer;

	if (cfg_trace)
		return;
	v->pol_gen = gen;
	v->flags   = denied ? v->flags | CT_F_POL_DENIED : v->flags & ~CT_F_POL_DENIED;
	peer	   = ct6_own_peer(k, v, &pk);
	if (!peer)
		return;
	peer->pol_gen = gen;
	peer->flags   = denied ? peer->flags | CT_F_POL_DENIED : peer->flags & ~CT_F_POL_DENIED;
}

/* A packet of a tracked IPv6 flow (k: the entry's key): REASON_NONE to go
 * on, or why to drop it (as policy_ct()). */
static __always_inline enum reason pol6_ct(const struct ct6_key *k, struct ct6_value *v)
{
	__u32	    gen = pol_active_gen();
	enum reason r;

	if (!gen)
		return REASON_NONE;
	if (v->pol_gen == gen)
		return (v->flags & CT_F_POL_DENIED) ? REASON_POLICY_DENIED : REASON_NONE;
	if (v->dir == CT_DIR_FWD)
		r = pol6_check_flow(&k->saddr, &v->nat_saddr, &v->nat_daddr, v->nat_dport, k->proto,
				    !!(v->flags & CT_F_HAIRPIN));
	else
		r = pol6_check_flow(&v->nat_daddr, &k->daddr, &k->saddr, k->sport, k->proto,
				    !!(v->flags & CT_F_HAIRPIN));
	ct6_set_policy(k, v, gen, r != REASON_NONE);
	return r;
}

/* pol6_ct() out of line, for the service path (lib/service6.h). */
static __noinline enum reason policy6_ct(const struct ct6_key *k, struct ct6_value *v)
{
	return pol6_ct(k, v);
}

/* A new IPv6 service flow whose conntrack entries service6_new() just
 * created: fwd as the client sent it, 'to' after translation. Allowed: the
 * entries carry the generation (the next packet is not checked again);
 * denied: they are removed, the flow never existed. Returns why to drop
 * it, or REASON_NONE. */
static __noinline enum reason policy6_service_new(const struct ct6_key *fwd,
						  const struct ct6_key *to)
{
	__u32		  gen = pol_active_gen();
	struct ct6_value *v;
	struct ct6_key	  rk;
	enum reason	  r;

	if (!gen)
		return REASON_NONE;
	v = bpf_map_lookup_elem(&bpfproxy_ct6, fwd);
	r = pol6_check_flow(&fwd->saddr, &to->saddr, &to->daddr, to->dport, to->proto,
			    v && (v->flags & CT_F_HAIRPIN));
	if (r == REASON_NONE) {
		if (v)
			ct6_set_policy(fwd, v, gen, 0);
		return r;
	}
	if (!cfg_trace) {
		ct6_reverse(to, &rk);
		bpf_map_delete_elem(&bpfproxy_ct6, &rk);
		bpf_map_delete_elem(&bpfproxy_ct6, fwd);
	}
	return r;
}

/* Ports of protocols parse_ipv6() leaves as PARSE_NOT_L4 (SCTP, behind
 * more extension headers than parse_ipv6() walks: where TCP and UDP have
 * them); -1 when the header is cut short. */
static __always_inline int pol6_other_ports(struct __sk_buff *skb, struct pkt6 *p)
{
	__be16 ports[2];

	if (p->tuple.proto != IPPROTO_SCTP)
		return 0;
	if (p->l4_off + 12 > ETH_HLEN + p->l3_len)
		return -1;
	if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)))
		return -1;
	p->tuple.sport = ports[0];
	p->tuple.dport = ports[1];
	return 0;
}

/* An ICMPv6 error about a tracked flow (either direction of it). */
static __always_inline int pol6_icmp_related(struct __sk_buff *skb, const struct pkt6 *p, __u64 now)
{
	struct icmp6_quote e = {};
	struct ct6_key	   rk;

	if (p->tuple.proto != IPPROTO_ICMPV6_ || icmp6_err_parse(skb, p, &e))
		return 0;
	if (ct6_lookup(&e.inner, now))
		return 1;
	ct6_reverse(&e.inner, &rk);
	return ct6_lookup(&rk, now) != NULL;
}

/* As pol_new_flow(): decide a packet of no tracked flow, and track the
 * flow when it may open one. */
static __always_inline int pol6_new_flow(struct __sk_buff *skb, const struct pkt6 *p,
					 const struct pol_end *c, const struct pol_end *s,
					 __u32 gen, __u64 now)
{
	struct ct6_value *v;
	enum reason	  r;
	int		  err;

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
	err = ct6_create(&p->tuple, &p->tuple, CT_F_PLAIN, 0, now);
	if (err)
		return drop(skb, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	v = bpf_map_lookup_elem(&bpfproxy_ct6, &p->tuple);
	if (v)
		ct6_set_policy(&p->tuple, v, gen, 0);
	return TC_ACT_OK;
}

/* Its reverse is tracked: the packet belongs to that flow. */
static __always_inline int pol6_reverse_known(struct __sk_buff *skb, const struct pkt6 *p,
					      __u64 now, int *rc)
{
	struct ct6_key	  rk;
	struct ct6_value *ct;
	enum reason	  r;

	ct6_reverse(&p->tuple, &rk);
	ct = ct6_lookup(&rk, now);
	if (!ct)
		return 0;
	r   = pol6_ct(&rk, ct);
	*rc = r == REASON_NONE ? TC_ACT_OK : drop(skb, r);
	return 1;
}

/* From a pod, to no service (tc_pod, lib/service6.h): the pod's egress
 * and, when the destination is a local pod, its ingress. looked_up: the
 * caller looked the tuple up in bpfproxy_ct6 and found nothing. */
static __noinline int policy6_plain(struct __sk_buff *skb, struct pkt6 *p, int looked_up)
{
	__u32		  gen = pol_active_gen();
	struct pol_end	  c, s;
	struct ct6_value *ct;
	enum reason	  r;
	__u64		  now;
	int		  rc;

	if (!gen)
		return TC_ACT_OK;
	pol6_resolve(&p->tuple.saddr, &c);
	pol6_resolve(&p->tuple.daddr, &s);
	if (!c.flags && !s.flags)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	if (!looked_up) {
		ct = ct6_lookup(&p->tuple, now);
		if (ct) {
			r = pol6_ct(&p->tuple, ct);
			if (r != REASON_NONE)
				return drop(skb, r);
			ct6_update(&p->tuple, ct, p->tcp_flags, now);
			return TC_ACT_OK;
		}
	}
	if (pol6_reverse_known(skb, p, now, &rc))
		return rc;
	return pol6_new_flow(skb, p, &c, &s, gen, now);
}

/* TC egress of a pod veth (tc_to_pod.c), IPv6: what enters the pod behind
 * ifindex. Only its ingress is checked here (sources on this node were
 * checked as they left their pod), as policy_to_pod(). */
static __noinline int policy6_to_pod(struct __sk_buff *skb, __u32 ifindex)
{
	__u32		  gen = pol_active_gen();
	struct pkt6	  p   = {};
	struct pol_end	  c, s;
	struct ct6_value *ct;
	enum parse_result pr;
	enum reason	  r;
	__u64		  now;
	int		  rc;

	if (!gen)
		return TC_ACT_OK;
	pr = parse_ipv6(skb, &p);
	if (pr != PARSE_OK && pr != PARSE_NOT_L4)
		return TC_ACT_OK; /* not IPv6, a later fragment, or cut short: the stack decides */
	if (p.tuple.proto == IPPROTO_ICMPV6_ && icmp6_is_nd(p.icmp_type))
		return TC_ACT_OK;
	pol6_resolve(&p.tuple.daddr, &s);
	if (!s.endpoint)
		return pol6_pod_isolated(ifindex, IPC_F_INGRESS_ISO) ? drop(skb, REASON_POLICY_IPV6)
								     : TC_ACT_OK;
	if (!s.flags)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	if (pr == PARSE_NOT_L4 && pol6_other_ports(skb, &p))
		return drop(skb, REASON_MALFORMED);
	ct = ct6_lookup(&p.tuple, now);
	if (ct) {
		r = pol6_ct(&p.tuple, ct);
		if (r != REASON_NONE)
			return drop(skb, r);
		if (ct->flags & CT_F_PLAIN)
			ct6_update(&p.tuple, ct, p.tcp_flags, now);
		return TC_ACT_OK;
	}
	if (pol6_reverse_known(skb, &p, now, &rc))
		return rc;
	if (pol6_icmp_related(skb, &p, now))
		return TC_ACT_OK;
	pol6_resolve(&p.tuple.saddr, &c);
	return pol6_new_flow(skb, &p, &c, &s, gen, now);
}

/* First thing on an IPv6 packet from the pod behind ifindex (tc_pod, its
 * egress): neighbour discovery passes; a source that is no endpoint of
 * bpfproxy_ipcache6 from a pod isolated for egress by its IPv4 address
 * fails closed (policy-ipv6). The rules themselves are applied by the
 * service path (service6_packet(): policy6_ct(), policy6_service_new(),
 * policy6_plain()). */
static __noinline int policy6_pod(struct __sk_buff *skb, __u32 ifindex)
{
	struct pkt6 p = {};

	/* In standby (taking over) the pod veth's ingress enforces nothing,
	 * IPv4 included (service_datapath()). */
	if (mode_standby() || !pol_active_gen())
		return TC_ACT_OK;
	if (parse_ipv6(skb, &p) == PARSE_OK && p.tuple.proto == IPPROTO_ICMPV6_ &&
	    icmp6_is_nd(p.icmp_type))
		return TC_ACT_OK;
	if (pol6_unknown_isolated(ifindex, &p.tuple.saddr, IPC_F_EGRESS_ISO))
		return drop(skb, REASON_POLICY_IPV6);
	return TC_ACT_OK;
}

#endif /* BPFPROXY_POLICY6_H */
