/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The IPv6 service datapath, the twin of lib/service.h's for IPv4:
 *   1. conntrack hit   -> apply the entry's rewrite (DNAT, SNAT or reverse)
 *   2. ICMPv6 error    -> translate it if it quotes a tracked flow
 *   3. frontend hit    -> choose a backend, create conntrack, DNAT (+SNAT)
 *   4. anything else   -> untouched: neighbour discovery, router
 *      advertisements, echo and every other ICMPv6 message included
 * The entry files dispatch here by ethertype, so IPv4 packets pay one
 * compare. Network policy as for IPv4 (lib/policy6.h). Not (yet) on the IPv6
 * path: the monitor's flow events and trace steps (drops are counted as for
 * IPv4).
 */
#ifndef BPFPROXY_SERVICE6_H
#define BPFPROXY_SERVICE6_H

#include "common.h"
#include "config.h"
#include "conntrack6.h"
#include "drop.h"
#include "fib.h"
#include "lb6.h"
#include "mode.h"
#include "monitor6.h"
#include "nat6.h"
#include "parse6.h"
#include "pod.h"
#include "policy6.h"
#include "reject6.h"

/* Source of a pod reaching itself through a service over IPv6: a unique
 * local address (RFC 4193) that the pod routes back to its gateway, where
 * bpfproxy_pod reverses the flow. Not link-local: the pod would look for
 * it on its own link (cilium#36752). */
const volatile union v6addr cfg_hairpin_ip6 = {
	.b = {0xfd, 0x62, 0x70, 0x78, 0x2a, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}};

static __always_inline void v6_copy(__u32 *dst, const union v6addr *a)
{
	dst[0] = a->w[0];
	dst[1] = a->w[1];
	dst[2] = a->w[2];
	dst[3] = a->w[3];
}

/* As fib_len(): the length the next hop must carry. */
static __always_inline __u16 fib6_len(const struct __sk_buff *skb, const struct pkt6 *p)
{
	return skb->gso_size ? p->l4_off - ETH_HLEN + p->l4_hdr_len + skb->gso_size : p->l3_len;
}

static __always_inline int fib6_route(struct __sk_buff *skb, const struct pkt6 *p,
				      const struct ct6_key *to, struct bpf_fib_lookup *fib)
{
	if (!cfg_fib_redirect)
		return -1;
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family	 = AF_INET6;
	fib->l4_protocol = to->proto;
	fib->sport	 = to->sport;
	fib->dport	 = to->dport;
	fib->tot_len	 = fib6_len(skb, p);
	v6_copy(fib->ipv6_src, &to->saddr);
	v6_copy(fib->ipv6_dst, &to->daddr);
	fib->ifindex = skb->ingress_ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* fib6_forward(): the hop limit is spent (passed to the stack, which
 * answers time exceeded), or a rewrite failed (dropped). The caller counts
 * them: fib6_forward() itself calls nothing that could deepen the stack
 * but pol6_unknown_isolated() (a small frame). Or the pod it would hand
 * the packet to is isolated for ingress and the destination is no IPv6
 * endpoint it has rules for (dropped as policy-ipv6). */
#define FWD6_TTL    (-7)
#define FWD6_FAILED (-8)
#define FWD6_POLICY (-9) /* into a pod isolated for ingress (lib/policy6.h) */

/* As fib_redirect_fill(): forward as a router (hop limit decremented; IPv6
 * has no header checksum), or leave to the stack; with 'c' a resolved
 * route is remembered in a conntrack entry's cache for 'len' bytes. */
static __always_inline int fib6_forward_fill(struct __sk_buff *skb, const struct pkt6 *p,
					     const struct bpf_fib_lookup *fib, int rc,
					     struct ct_fwd *c, __u16 len)
{
	__u8 hl;

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;
	if (p->hop_limit <= 1)
		return FWD6_TTL;
	hl = p->hop_limit - 1;
	if (bpf_skb_store_bytes(skb, IP6_HOPLIMIT_OFF, &hl, 1, 0))
		return FWD6_FAILED;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0))
		return FWD6_FAILED;
	{
		struct pod_if_key pk = {.ifindex = fib->ifindex};

		if (bpf_map_lookup_elem(&bpfproxy_pod_ifs, &pk)) {
			/* Skips the veth's egress hook (tc_to_pod.c): the
			 * flow's policy was decided on the service path
			 * (policy6_service_new(), policy6_ct()); a
			 * destination with no IPv6 policy state into an
			 * isolated pod fails closed here. */
			if (pol6_unknown_isolated(fib->ifindex, (const union v6addr *)fib->ipv6_dst,
						  IPC_F_INGRESS_ISO))
				return FWD6_POLICY;
			if (c)
				fwd_tc_fill(c, len, fib, FWD_TC_PEER);
			return bpf_redirect_peer(fib->ifindex, 0);
		}
	}
	if (c)
		fwd_tc_fill(c, len, fib, FWD_TC_REDIRECT);
	return bpf_redirect(fib->ifindex, 0);
}

static __always_inline int fib6_forward(struct __sk_buff *skb, const struct pkt6 *p,
					const struct bpf_fib_lookup *fib, int rc)
{
	return fib6_forward_fill(skb, p, fib, rc, NULL, 0);
}

/* An established flow's rewritten packet sent where its entry's cache says
 * (lib/fib.h fwd_tc_fresh()), as fib6_forward_fill() would with the lookup
 * that filled it; the policy of a pod isolated for ingress still checked
 * for every packet. */
static __always_inline int fib6_forward_cached(struct __sk_buff *skb, const struct pkt6 *p,
					       const struct ct6_key *to, const struct ct_fwd *c)
{
	__u32 ifindex = c->ifindex;
	__u8  where   = c->where;
	__u8  mac[2 * ETH_ALEN];
	__u8  hl = p->hop_limit - 1;

	__builtin_memcpy(mac, c->dmac, ETH_ALEN);
	__builtin_memcpy(mac + ETH_ALEN, c->smac, ETH_ALEN);
	if (bpf_skb_store_bytes(skb, IP6_HOPLIMIT_OFF, &hl, 1, 0) ||
	    bpf_skb_store_bytes(skb, 0, mac, sizeof(mac), 0))
		return FWD6_FAILED;
	if (where != FWD_TC_PEER)
		return bpf_redirect(ifindex, 0);
	if (pol6_unknown_isolated(ifindex, &to->daddr, IPC_F_INGRESS_ISO))
		return FWD6_POLICY;
	return bpf_redirect_peer(ifindex, 0);
}

/* Count what fib6_forward() leaves to its caller. */
static __always_inline int fib6_verdict(struct __sk_buff *skb, int rc)
{
	if (rc == FWD6_TTL) {
		count_reason(skb, REASON_TTL);
		return TC_ACT_OK;
	}
	if (rc == FWD6_FAILED)
		return drop(skb, REASON_REWRITE_FAILED);
	if (rc == FWD6_POLICY)
		return drop(skb, REASON_POLICY_IPV6);
	return rc;
}

static __always_inline int fib6_redirect(struct __sk_buff *skb, const struct pkt6 *p,
					 const struct bpf_fib_lookup *fib, int rc)
{
	return fib6_verdict(skb, fib6_forward(skb, p, fib, rc));
}

/* As fib_source_for(): the node's source address towards daddr (kernels
 * with BPF_FIB_LOOKUP_SRC), else the node address the client addressed.
 * Returns 0 and fills *out, or -1. */
static __always_inline int fib6_source_for(struct __sk_buff *skb, const union v6addr *daddr,
					   const union v6addr *addressed, union v6addr *out)
{
	struct bpf_fib_lookup fib = {};
	long		      rc;

	fib.family  = AF_INET6;
	fib.tot_len = IPV6_HLEN;
	v6_copy(fib.ipv6_dst, daddr);
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		out->w[0] = fib.ipv6_src[0];
		out->w[1] = fib.ipv6_src[1];
		out->w[2] = fib.ipv6_src[2];
		out->w[3] = fib.ipv6_src[3];
		return 0;
	}
	if (rc < 0 && node_ip6_flags(addressed)) {
		*out = *addressed;
		return 0;
	}
	return -1;
}

/* translate6(): too big for the next hop; *mtu holds its MTU. The caller
 * answers packet too big (keeping the call chain short for the stack). */
#define TRANSLATE6_TOO_BIG (-5)

/* Rewrite to 'to' and forward; too big for the next hop: TRANSLATE6_TOO_BIG,
 * the packet untouched, so the answer quotes it as the client sent it. */
static __noinline int translate6(struct __sk_buff *skb, struct pkt6 *p, const struct ct6_key *to,
				 __u32 *mtu, struct ct_fwd *c)
{
	struct bpf_fib_lookup fib;
	__u16		      len = fib6_len(skb, p);
	int		      rc  = fib6_route(skb, p, to, &fib);

	trace_step(TRACE_FIB, cfg_fib_redirect, 0, 0, rc, fib.ifindex, fib.mtu_result, 0, 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		*mtu = fib.mtu_result;
		return TRANSLATE6_TOO_BIG;
	}
	if (nat6_rewrite(skb, p, to))
		return drop(skb, REASON_REWRITE_FAILED);
	return fib6_verdict(skb, fib6_forward_fill(skb, p, &fib, rc, c, len));
}

/* An established flow's packet rewritten and sent by its entry's route
 * cache. A function of its own: inlined, the rewrite's frame (SCTP's CRC
 * delta under it) pushed the pod program past the 512-byte stack. */
static __noinline int translate6_cached(struct __sk_buff *skb, struct pkt6 *p,
					const struct ct6_key *to, const struct ct_fwd *c)
{
	if (nat6_rewrite(skb, p, to))
		return drop(skb, REASON_REWRITE_FAILED);
	return fib6_verdict(skb, fib6_forward_cached(skb, p, to, c));
}

/* 'c': an established flow's forwarding cache (filled here), or NULL. */
static __always_inline int translate6_or_too_big(struct __sk_buff *skb, struct pkt6 *p,
						 const struct ct6_key *to, struct ct_fwd *c)
{
	__u32 mtu = 0;
	int   rc  = translate6(skb, p, to, &mtu, c);

	if (rc == TRANSLATE6_TOO_BIG)
		return icmp6_reply(skb, p, ICMPV6_PKT_TOOBIG << 8, mtu, REASON_FRAG_NEEDED);
	return rc;
}

#define ICMP6_UNRELATED (-2)

/* Rewrite an ICMPv6 error about a tracked flow (the quote to 'inner', the
 * outer header to 'outer') and forward it. Out of line: the stack. */
static __noinline int icmp6_forward(struct __sk_buff *skb, struct pkt6 *p,
				    const struct icmp6_quote *e, const struct ct6_key *inner,
				    const struct ct6_key *outer)
{
	struct bpf_fib_lookup fib;
	int		      rc;

	if (icmp6_err_rewrite_inner(skb, e, inner) || nat6_rewrite_addrs(skb, p, outer))
		return FWD6_FAILED;
	rc = fib6_route(skb, p, &p->tuple, &fib);
	return fib6_forward(skb, p, &fib, rc); /* counted by the caller: fib6_verdict() */
}

static __always_inline int service6_icmp(struct __sk_buff *skb, struct pkt6 *p, __u64 now)
{
	struct icmp6_quote e = {};
	struct ct6_key	   k, outer; /* k: the lookup key, then the quote's rewrite */
	struct ct6_value  *ct;

	if (icmp6_err_parse(skb, p, &e))
		return ICMP6_UNRELATED;
	ct6_reverse(&e.inner, &k);
	ct = ct6_lookup(&k, now);
	if (!ct)
		return ICMP6_UNRELATED;
	/* From the quoted destination itself: it speaks for the service; from
	 * a router on the path: its own address stays. */
	outer.saddr = v6_eq(&p->tuple.saddr, &e.inner.daddr) ? ct->nat_saddr : p->tuple.saddr;
	outer.daddr = ct->nat_daddr;
	outer.sport = outer.dport = 0;
	outer.proto		  = p->tuple.proto;
	outer.pad[0] = outer.pad[1] = outer.pad[2] = 0;
	/* The quoted packet went the other way: it gets the reverse of this
	 * entry's rewrite (the key of its peer entry). */
	ct6_peer_key(ct, e.inner.proto, &k);
	return icmp6_forward(skb, p, &e, &k, &outer);
}

#define SNAT6_PORT_TRIES 8

static __always_inline int snat6_pick_port(const struct ct6_key *fwd, struct ct6_key *to, __u64 now)
{
	__u32 range = (__u32)cfg_snat_port_max - cfg_snat_port_min + 1;
	int   i;

	for (i = 0; i < SNAT6_PORT_TRIES; i++) {
		to->sport = bpf_htons(cfg_snat_port_min + bpf_get_prandom_u32() % range);
		if (ct6_reply_free(fwd, to, now))
			return 0;
	}
	return -1;
}

/* What service6_new() leaves to its caller (keeping the call chain, and
 * so the stack, short): translate to *to, or reject. */
#define SVC6_TRANSLATE (-3)
#define SVC6_REJECT    (-4)
/* service6_packet(): an ICMPv6 error, for service6_icmp_path(). */
#define SVC6_ICMP_ERROR (-6)

/* bpfExternalServiceMode Tunnel/DSR for IPv6 (its hooks below). */
#include "tunnel6.h"

static __noinline int service6_new(struct __sk_buff *skb, struct pkt6 *p, const struct fe_value *fe,
				   int from_pod, struct ct6_key *out)
{
	struct backend6 be = {};
	struct ct6_key	to;
	enum reason	r;
	int		err;
	__u8		flags = from_pod ? 0 : CT_F_EXTERNAL;
	__u64		now   = bpf_ktime_get_ns();

	if (!lb6_source_allowed(fe, &p->tuple.saddr))
		return drop(skb, REASON_LB_SOURCE_RANGE);
	if (!ct_opens_flow(p->tuple.proto, p->tcp_flags)) {
		if (fe->cluster_count == 0 && fe->local_count == 0)
			return SVC6_REJECT;
		count_reason(skb, REASON_CT_NOT_OPENING);
		return TC_ACT_OK;
	}
	r = lb6_select(fe, lb_local_only(fe, from_pod), &p->tuple, now, &be);
	if (r != REASON_NONE)
		trace6_backend(r, lb_local_only(fe, from_pod));
	if (r == REASON_NO_ENDPOINTS)
		return SVC6_REJECT;
	if (r != REASON_NONE)
		return drop(skb, r);

	to.saddr  = p->tuple.saddr;
	to.sport  = p->tuple.sport;
	to.daddr  = be.addr;
	to.dport  = be.port;
	to.proto  = p->tuple.proto;
	to.pad[0] = to.pad[1] = to.pad[2] = 0;

	if (from_pod && v6_eq(&be.addr, &p->tuple.saddr)) {
		to.saddr.w[0] = cfg_hairpin_ip6.w[0];
		to.saddr.w[1] = cfg_hairpin_ip6.w[1];
		to.saddr.w[2] = cfg_hairpin_ip6.w[2];
		to.saddr.w[3] = cfg_hairpin_ip6.w[3];
		flags |= CT_F_SNAT | CT_F_HAIRPIN;
	} else if (!from_pod && !(be.flags & BE_F_LOCAL)) {
		/* Tunnel/DSR (lib/tunnel6.h); else SNAT, counted as such */
		if ((fe->flags & FE_F_EXTERNAL) && tun6_carries(&p->tuple.saddr, &be.addr)) {
			*out = to;
			return SVC6_TUNNEL;
		}
		if (fe->flags & FE_F_EXTERNAL)
			tun_count(skb, TUN_C_NEW_SNAT);
		if (fib6_source_for(skb, &be.addr, &p->tuple.daddr, &to.saddr))
			return drop(skb, REASON_NO_SNAT_SOURCE);
		flags |= CT_F_SNAT;
	}
	if (node_ip6_flags(&be.addr))
		flags |= CT_F_HOST_BE;
	if (!(flags & CT_F_SNAT) && !ct6_reply_free(&p->tuple, &to, now))
		flags |= CT_F_SNAT;
	if ((flags & CT_F_SNAT) && snat6_pick_port(&p->tuple, &to, now))
		return drop(skb, REASON_NAT_PORTS);

	err = ct6_create(&p->tuple, &to, flags, fe->svc_id, now);
	if (err)
		return drop(skb, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	trace6_new(be.flags, lb_local_only(fe, from_pod), flags, &to);
	*out = to;
	return SVC6_TRANSLATE;
}

/* As ct_udp_reuse_forget() (lib/service.h), IPv6: a pod's UDP datagram to
 * no frontend whose replies would hit a translated flow's reply entry
 * removes that flow (the pod reached its backend directly from the same
 * port). 1 when removed (in trace mode: would be). A call of its own: its
 * keys do not grow service6_packet()'s frame (the stack limit). */
static __noinline int ct6_udp_reuse_forget(const struct pkt6 *p, __u64 now)
{
	struct ct6_key	  rk, pk;
	struct ct6_value *ct;

	if (p->tuple.proto != IPPROTO_UDP)
		return 0;
	ct6_reverse(&p->tuple, &rk);
	ct = ct6_lookup(&rk, now);
	if (!ct || ct->dir != CT_DIR_REPLY || (ct->flags & (CT_F_PLAIN | CT_F_TUNNEL)))
		return 0;
	if (cfg_trace) /* lib/trace.h: no map writes */
		return 1;
	if (ct6_own_peer(&rk, ct, &pk))
		bpf_map_delete_elem(&bpfproxy_ct6, &pk);
	bpf_map_delete_elem(&bpfproxy_ct6, &rk);
	return 1;
}

/* ct6_closed_forget(): what a packet that hit a closed TCP flow's entry
 * turned out to be (lib/service.h drain_reopens(), ct_reply_is_stale()). */
#define CT6_LIVE    0 /* the flow's packet: served by its entry */
#define CT6_REOPENS 1 /* draining, a SYN reopening a closed flow: kube-proxy's */
#define CT6_STALE   2 /* a SYN-ACK on a closed translated reply entry */

/* As drain_reopens() and ct_stale_forget() (lib/service.h), IPv6. Draining,
 * a SYN that reopens a closed flow of ours (reset, or a FIN seen) is a new
 * flow, kube-proxy's to take; a SYN-ACK on the reply entry of a closed
 * translated flow (reset, or both FINs seen) answers a SYN this node never
 * translated (the client reused its port to reach the backend directly:
 * socket LB or pod to pod), and translating it to the service address
 * would leave the client waiting. Either way both entries go and the
 * caller treats the packet as of no known flow. In trace mode nothing is
 * removed, but the answer is the same. A call of its own: its keys do not
 * grow service6_packet()'s frame (the stack limit). */
static __noinline int ct6_closed_forget(const struct pkt6 *p, const struct ct6_value *ct)
{
	const __u8     fins = CT_S_FIN_FWD | CT_S_FIN_REPLY;
	__u8	       syn  = p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST);
	struct ct6_key pk;
	int	       why;

	if (ct_has_states(p->tuple.proto) && ct->dir == CT_DIR_FWD &&
	    (syn & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
	    (ct->state & (CT_S_RST | fins)) && mode_draining())
		why = CT6_REOPENS;
	else if (p->tuple.proto == IPPROTO_TCP && ct->dir == CT_DIR_REPLY &&
		 !(ct->flags & (CT_F_PLAIN | CT_F_TUNNEL)) &&
		 syn == (TCP_FLAG_SYN | TCP_FLAG_ACK) &&
		 ((ct->state & CT_S_RST) || (ct->state & fins) == fins))
		why = CT6_STALE;
	else
		return CT6_LIVE;
	if (cfg_trace) /* lib/trace.h: no map writes */
		return why;
	if (ct6_own_peer(&p->tuple, ct, &pk))
		bpf_map_delete_elem(&bpfproxy_ct6, &pk);
	bpf_map_delete_elem(&bpfproxy_ct6, &p->tuple);
	return why;
}

static __noinline int service6_packet(struct __sk_buff *skb, int from_pod)
{
	struct pkt6	  p = {};
	struct ct6_value *ct;
	struct fe_value	 *fe;
	enum parse_result pr;
	__u64		  now;
	int		  tunnelled;

	if (mode_standby())
		return TC_ACT_OK;
	pr = parse_ipv6(skb, &p);
	if (pr == PARSE_NOT_IPV4)
		return TC_ACT_OK;
	if (pr == PARSE_MALFORMED)
		return drop(skb, REASON_MALFORMED);
	/* Every IPv6 packet a pod sends, whatever it carries (lib/pod.h). */
	if (from_pod && !pod6_source_ok(skb->ingress_ifindex, &p.tuple.saddr))
		return drop(skb, REASON_SPOOFED);
	/* From outside, one of the node's own addresses as source is forged
	 * (not inside our tunnel: a reply from our NodePort address, whose
	 * outer source was checked to be a node's, lib/tunnel.h tun_rx()). */
	tunnelled = !from_pod && tun6_came(skb);
	if (!from_pod && !tunnelled && node_ip6_flags(&p.tuple.saddr))
		return drop(skb, REASON_SPOOFED);
	if (pr == PARSE_FRAGMENT) {
		count_reason(skb, REASON_FRAGMENT);
		return TC_ACT_OK;
	}
	if (pr == PARSE_NOT_L4 && from_pod) {
		/* No service speaks it; network policy still applies. */
		if (pol6_other_ports(skb, &p))
			return drop(skb, REASON_MALFORMED);
		return policy6_plain(skb, &p, 0);
	}
	if (pr != PARSE_OK)
		return TC_ACT_OK;

	now = bpf_ktime_get_ns();
	if (p.tuple.proto == IPPROTO_ICMPV6_) {
		if (icmp6_is_error(p.icmp_type))
			return SVC6_ICMP_ERROR;
		/* Echo, MLD, ...: no service's, network policy's from a pod;
		 * neighbour discovery: nobody's. */
		if (from_pod && !icmp6_is_nd(p.icmp_type))
			return policy6_plain(skb, &p, 0);
		return TC_ACT_OK;
	}

	ct = ct6_lookup(&p.tuple, now);
	/* only a SYN or SYN-ACK can hit a closed flow's entry: no call for the rest */
	if (ct && (p.tcp_flags & TCP_FLAG_SYN)) {
		int closed = ct6_closed_forget(&p, ct);

		if (closed == CT6_REOPENS)
			ct = NULL; /* on to its frontend: drain-new */
		if (closed != CT6_LIVE)
			goto ct_miss; /* from here ct != NULL: a stale SYN-ACK */
	}
	if (ct) {
		struct ct6_key to = {
			.saddr = ct->nat_saddr,
			.sport = ct->nat_sport,
			.daddr = ct->nat_daddr,
			.dport = ct->nat_dport,
			.proto = p.tuple.proto,
		};
		/* no call while no policy isolates anything (pol6_ct()'s first test) */
		enum reason r	= pol_active_gen() ? policy6_ct(&p.tuple, ct) : REASON_NONE;
		__u8	    was = ct->state;

		trace6_ct_hit(ct);
		if (r != REASON_NONE)
			return drop(skb, r);
		ct6_update(&p.tuple, ct, p.tcp_flags, now);
		monitor_flow_close6(skb, from_pod ? MON_HOOK_POD : MON_HOOK_DATA, &p.tuple, ct, was,
				    now);
		if (ct->flags & CT_F_PLAIN)
			return TC_ACT_OK;      /* tracked for policy: the stack forwards it */
		if (ct->flags & CT_F_TUNNEL) { /* lib/tunnel6.h */
			int rc = tun6_ct_forward(skb, &p, ct->dir | (from_pod ? TUN6_FROM_POD : 0),
						 &to);

			if (rc != TUN6_TRANSLATE)
				return tun6_answer(skb, &p, rc);
		}
		if (fwd_tc_fresh(&ct->fwd, fib6_len(skb, &p), p.hop_limit, now))
			return translate6_cached(skb, &p, &to, &ct->fwd);
		return translate6_or_too_big(skb, &p, &to, &ct->fwd);
	}
ct_miss:
	trace_step(TRACE_CT_MISS, 0, 0, 0, 0, 0, 0, 0, 0);
	/* through the tunnel: the frontend as the ingress node saw it */
	fe = tunnelled ? tun6_lb_lookup(&p.tuple) : lb6_lookup(&p.tuple);
	if (!fe && tunnelled)
		return drop(skb, REASON_TUN_NO_FLOW);
	if (!fe) {
		int stale = ct != NULL, rc; /* counted once it passes, as IPv4 does */

		trace_step(TRACE_NO_FRONTEND, 0, 0, 0, 0, 0, 0, 0, 0);
		if (!stale && from_pod)
			stale = ct6_udp_reuse_forget(&p, now);
		rc = from_pod ? policy6_plain(skb, &p, 1) : TC_ACT_OK;

		if (stale && rc == TC_ACT_OK)
			count_reason(skb, REASON_CT_STALE_REPLY);
		return rc;
	}
	trace6_frontend(fe);
	if (mode_draining() && !tunnelled) {
		count_reason(skb, REASON_DRAIN_NEW);
		return TC_ACT_OK;
	}
	{
		struct ct6_key to;
		int	       rc;

		if (tunnelled) {
			/* lib/tunnel6.h; a global's result is unknown to the
			 * verifier: bounded here, so it does not walk the reject
			 * and ingress paths below for it (the data program's
			 * budget of 1M instructions) */
			rc = tun6_backend_new(skb, &p, fe, &to);
			if (rc != SVC6_TRANSLATE)
				return tun6_verdict(rc);
		} else {
			rc = service6_new(skb, &p, fe, from_pod, &to);
			if (rc == SVC6_REJECT)
				return reject6(skb, &p);
			if (rc == SVC6_TUNNEL)
				return tun6_answer(skb, &p, tun6_ingress_new(skb, &p, fe, &to));
			if (rc != SVC6_TRANSLATE)
				return rc;
		}
		/* here, not in service6_new(): its frame is the deeper one */
		monitor_flow_new6(skb, from_pod ? MON_HOOK_POD : MON_HOOK_DATA, &p.tuple, &to);
		/* Network policy (lib/policy6.h) once the backend is chosen,
		 * in this frame rather than service6_new()'s (the stack). */
		{
			enum reason r = policy6_service_new(&p.tuple, &to);

			if (r != REASON_NONE)
				return drop(skb, r);
		}
		return translate6_or_too_big(skb, &p, &to, NULL);
	}
}

/* An ICMPv6 error: parsed again in a frame of its own (rare; the stack of
 * a call chain is counted whole). */
static __noinline int service6_icmp_path(struct __sk_buff *skb)
{
	struct pkt6 p = {};
	int	    rc;

	if (parse_ipv6(skb, &p) != PARSE_OK)
		return TC_ACT_OK;
	rc = service6_icmp(skb, &p, bpf_ktime_get_ns());
	return rc == ICMP6_UNRELATED ? TC_ACT_OK : fib6_verdict(skb, rc);
}

/* The IPv6 ingress path of bpfproxy_pod and bpfproxy_data. Inline: it has
 * no frame of its own, and a call (with its return) is a cost every packet
 * pays. */
static __always_inline int service6_datapath(struct __sk_buff *skb, int from_pod)
{
	int rc = service6_packet(skb, from_pod);

	return rc == SVC6_ICMP_ERROR ? service6_icmp_path(skb) : rc;
}

/* TC egress: replies of host-network endpoints on this node (as
 * service_host_reply_pkt()). */
static __noinline int service6_host_reply(struct __sk_buff *skb)
{
	struct pkt6	  p = {};
	struct ct6_value *ct;
	struct ct6_key	  to;
	__u64		  now;

	if (mode_standby() || parse_ipv6(skb, &p) != PARSE_OK || p.tuple.proto == IPPROTO_ICMPV6_)
		return TC_ACT_OK;
	if (!node_ip6_flags(&p.tuple.saddr))
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	ct  = ct6_lookup(&p.tuple, now);
	if (!ct || ct->dir != CT_DIR_REPLY || !(ct->flags & CT_F_HOST_BE))
		return TC_ACT_OK;
	if ((p.tcp_flags & TCP_FLAG_SYN) && ct6_closed_forget(&p, ct) == CT6_STALE) {
		/* a new connection of the client's, not this flow's */
		count_reason(skb, REASON_CT_STALE_REPLY);
		return TC_ACT_OK;
	}
	{
		__u8 was = ct->state;

		ct6_update(&p.tuple, ct, p.tcp_flags, now);
		monitor_flow_close6(skb, MON_HOOK_HOST, &p.tuple, ct, was, now);
	}
	to.saddr  = ct->nat_saddr;
	to.daddr  = ct->nat_daddr;
	to.sport  = ct->nat_sport;
	to.dport  = ct->nat_dport;
	to.proto  = p.tuple.proto;
	to.pad[0] = to.pad[1] = to.pad[2] = 0;
	if (ct->flags & CT_F_TUNNEL) { /* Tunnel: back through the ingress node (lib/tunnel6.h) */
		int rc = tun6_ct_forward(skb, &p, ct->dir, &to);

		if (rc != TUN6_TRANSLATE)
			return tun6_answer(skb, &p, rc);
	}
	if (nat6_rewrite(skb, &p, &to))
		return drop(skb, REASON_REWRITE_FAILED);
	return TC_ACT_OK;
}

#endif /* BPFPROXY_SERVICE6_H */
