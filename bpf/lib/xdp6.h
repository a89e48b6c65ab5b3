/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * XDP acceleration for IPv6 (bpf/xdp_data.c): the frames of established
 * IPv6 service flows, both directions the IPv4 path serves (the client's,
 * DNAT'd and maybe SNAT'd, and the remote backend's replies), rewritten in
 * place from their bpfproxy_ct6 entry and sent on with the route cached in
 * it (struct ct_fwd, as lib/xdp.h does for IPv4). The decisions are the TC
 * IPv6 path's (lib/service6.h service6_packet() on a conntrack hit: the
 * same policy check, the same conntrack update, the same rewrite); the
 * bytes sent are the ones TC sends.
 *
 * Everything else passes untouched to the TC hook, which does all of it as
 * without XDP: new flows (TC chooses the backend and creates the entries),
 * ICMPv6 (neighbour discovery, errors about our flows), any extension
 * header before the L4 header (fragments included), SCTP (its CRC32c),
 * other protocols, TCP SYN/FIN/RST, a hop limit of 1 or less, a frame longer
 * than the cached route took (TC answers packet too big), flows tracked for
 * policy only or tunnelled, an unresolved neighbour, a pod's flow whose new
 * source is one of ours.
 */
#ifndef BPFPROXY_XDP6_H
#define BPFPROXY_XDP6_H

#include "service6.h"
#include "xdp.h"

/* Ethernet + the fixed IPv6 header: where TCP/UDP starts in every frame
 * this path touches (extension headers are TC's). */
#define XDP6_L4_OFF (ETH_HLEN + IPV6_HLEN)

static __always_inline int xdp_is_ipv6(struct xdp_md *ctx)
{
	void	      *data = (void *)(long)ctx->data;
	struct ethhdr *eth  = data;

	if (data + sizeof(*eth) > (void *)(long)ctx->data_end)
		return 0;
	return eth->h_proto == bpf_htons(ETH_P_IPV6);
}

/* Parse Ethernet + IPv6 + TCP/UDP right after the fixed header, reading
 * the frame directly. PARSE_MALFORMED exactly where parse_ipv6() says so
 * for such a frame (version, payload length past the frame, L4 header past
 * the payload, TCP data offset); PARSE_NOT_L4 for anything else after the
 * fixed header, for TC to parse. */
static __always_inline enum parse_result xdp6_parse(struct xdp_md *ctx, struct pkt6 *p)
{
	void		*data = (void *)(long)ctx->data;
	void		*end  = (void *)(long)ctx->data_end;
	struct ipv6hdr_ *ip   = data + ETH_HLEN;
	__u32		 plen, l3_end;

	if ((void *)(ip + 1) > end)
		return PARSE_MALFORMED;
	if ((ip->vtc >> 4) != 6)
		return PARSE_MALFORMED;
	plen = bpf_ntohs(ip->payload_len);
	if (plen + XDP6_L4_OFF > (__u32)(end - data))
		return PARSE_MALFORMED;
	if (ip->nexthdr != IPPROTO_TCP && ip->nexthdr != IPPROTO_UDP)
		return PARSE_NOT_L4;
	l3_end	       = XDP6_L4_OFF + plen;
	p->l3_len      = IPV6_HLEN + plen;
	p->l4_off      = XDP6_L4_OFF;
	p->hop_limit   = ip->hop_limit;
	p->tuple.saddr = ip->saddr;
	p->tuple.daddr = ip->daddr;
	p->tuple.proto = ip->nexthdr;
	if (ip->nexthdr == IPPROTO_TCP) {
		struct tcphdr *th = data + XDP6_L4_OFF;

		if (XDP6_L4_OFF + sizeof(*th) > l3_end || (void *)(th + 1) > end)
			return PARSE_MALFORMED;
		if (th->doff < 5 || XDP6_L4_OFF + th->doff * 4 > l3_end)
			return PARSE_MALFORMED;
		p->tuple.sport = th->source;
		p->tuple.dport = th->dest;
		p->tcp_flags   = ((__u8 *)th)[13];
		p->l4_hdr_len  = th->doff * 4;
	} else {
		struct udphdr *uh = data + XDP6_L4_OFF;

		if (XDP6_L4_OFF + sizeof(*uh) > l3_end || (void *)(uh + 1) > end)
			return PARSE_MALFORMED;
		p->tuple.sport = uh->source;
		p->tuple.dport = uh->dest;
		p->l4_hdr_len  = sizeof(*uh);
	}
	return PARSE_OK;
}

/* As xdp_route() (lib/xdp.h) for IPv6: where the frame rewritten to 'to'
 * goes, XW_STACK for all that TC finishes (no neighbour yet: TC's
 * bpf_redirect_neigh; too big: TC's packet too big; hop limit spent). */
static __always_inline enum xdp_where xdp6_route(struct xdp_md *ctx, const struct pkt6 *p,
						 const struct ct6_key  *to,
						 struct bpf_fib_lookup *fib, __u8 *ttl_check)
{
	struct pod_if_key pk;
	long		  rc;

	*ttl_check = 0;
	if (!cfg_fib_redirect)
		return XW_STACK;
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family	 = AF_INET6;
	fib->l4_protocol = to->proto;
	fib->sport	 = to->sport;
	fib->dport	 = to->dport;
	fib->tot_len	 = p->l3_len;
	v6_copy(fib->ipv6_src, &to->saddr);
	v6_copy(fib->ipv6_dst, &to->daddr);
	fib->ifindex = ctx->ingress_ifindex;
	rc	     = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) {
		/* for this host (a host-network backend): TC rewrites and
		 * passes it up, as XDP does */
		fib->ifindex = ctx->ingress_ifindex;
		return node_ip6_flags(&to->saddr) ? XW_STACK : XW_LOCAL;
	}
	*ttl_check = 1;
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
	    p->hop_limit <= 1)
		return XW_STACK;
	pk.ifindex = fib->ifindex;
	if (bpf_map_lookup_elem(&bpfproxy_pod_ifs, &pk))
		/* a pod here: the stack forwards it (lib/xdp.h xdp_route()),
		 * the veth's egress hook applies the pod's IPv6 policy */
		return node_ip6_flags(&to->saddr) ? XW_STACK : XW_LOCAL;
	return rc == BPF_FIB_LKUP_RET_SUCCESS ? XW_FORWARD : XW_STACK;
}

/* As xdp_route_ct(): the route the entry cached (filled by XDP: TC's own
 * are not read here), or a lookup that refills it. */
static __always_inline enum xdp_where xdp6_route_ct(struct xdp_md *ctx, const struct pkt6 *p,
						    const struct ct6_key *to, struct ct6_value *ct,
						    struct bpf_fib_lookup *fib, __u64 now)
{
	struct ct_fwd *c     = &ct->fwd;
	__u32	       stamp = (__u32)(now >> XDP_FWD_SHIFT);
	int	       fresh = c->ifindex && c->where < FWD_TC_REDIRECT &&
		    (__u32)(stamp - c->stamp) < XDP_FWD_LIFE;
	enum xdp_where w;
	__u8	       ttl_check;

	if (fresh && p->l3_len <= c->max_len && !(c->ttl_check && p->hop_limit <= 1)) {
		fib->ifindex = c->ifindex;
		__builtin_memcpy(fib->dmac, c->dmac, ETH_ALEN);
		__builtin_memcpy(fib->smac, c->smac, ETH_ALEN);
		return c->where;
	}
	w = xdp6_route(ctx, p, to, fib, &ttl_check);
	if (w != XW_STACK)
		xdp_fwd_fill_len(c, p->l3_len, fib, w, ttl_check, stamp, fresh);
	return w;
}

/* As xdp_ct_touch(), over ct6_update(). */
static __always_inline void xdp6_ct_touch(const struct ct6_key *k, struct ct6_value *v,
					  __u8 tcp_flags, __u64 now)
{
	__u64 life, slack, exp;

	if (!(v->state & CT_S_ESTABLISHED) ||
	    (v->state & (CT_S_RST | CT_S_FIN_FWD | CT_S_FIN_REPLY)) ||
	    (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST))) {
		ct6_update(k, v, tcp_flags, now);
		return;
	}
	if (cfg_trace) /* lib/trace.h: no map writes */
		return;
	life  = ct_lifetime(k->proto, v->state);
	slack = life >> 3;
	if (slack > XDP_CT_SLACK_NS)
		slack = XDP_CT_SLACK_NS;
	exp = now + life;
	if (exp > v->expires_ns + slack)
		v->expires_ns = exp;
}

/* Rewrite the frame's addresses and ports to 'to' in place, the L4
 * checksum folded over the pseudo-header change as TC's nat6_rewrite()
 * does (a UDP checksum of 0 stays 0, a computed 0 is sent as 0xffff), the
 * hop limit decremented when XDP forwards it. 0, or -1 when the frame is
 * shorter than the parse said. */
static __always_inline int xdp6_rewrite(struct xdp_md *ctx, struct pkt6 *p,
					const struct ct6_key *to, int dec_hl)
{
	void		*data = (void *)(long)ctx->data;
	void		*end  = (void *)(long)ctx->data_end;
	struct ipv6hdr_ *ip   = data + ETH_HLEN;
	__be16		*ports;
	__u16		*l4c;
	__u16		 c;

	if ((void *)(ip + 1) > end)
		return -1;
	ports = data + XDP6_L4_OFF;
	if (p->tuple.proto == IPPROTO_TCP) {
		struct tcphdr *th = data + XDP6_L4_OFF;

		if ((void *)(th + 1) > end)
			return -1;
		l4c = &th->check;
	} else {
		struct udphdr *uh = data + XDP6_L4_OFF;

		if ((void *)(uh + 1) > end)
			return -1;
		l4c = &uh->check;
	}
	c = *l4c;
	if (!(p->tuple.proto == IPPROTO_UDP && c == 0)) {
		if (!v6_eq(&p->tuple.saddr, &to->saddr))
			c = csum_replace16(c, &p->tuple.saddr, &to->saddr);
		if (!v6_eq(&p->tuple.daddr, &to->daddr))
			c = csum_replace16(c, &p->tuple.daddr, &to->daddr);
		if (p->tuple.sport != to->sport)
			c = csum_replace2(c, p->tuple.sport, to->sport);
		if (p->tuple.dport != to->dport)
			c = csum_replace2(c, p->tuple.dport, to->dport);
		if (p->tuple.proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*l4c = c;
	}
	if (dec_hl)
		ip->hop_limit = p->hop_limit - 1;
	ip->saddr      = to->saddr;
	ip->daddr      = to->daddr;
	ports[0]       = to->sport;
	ports[1]       = to->dport;
	p->tuple.saddr = to->saddr;
	p->tuple.daddr = to->daddr;
	p->tuple.sport = to->sport;
	p->tuple.dport = to->dport;
	return 0;
}

/* As xdp_translate(): rewrite and send the frame where the route said. */
static __always_inline int xdp6_translate(struct xdp_md *ctx, struct pkt6 *p,
					  const struct ct6_key *to, enum xdp_where w,
					  const struct bpf_fib_lookup *fib)
{
	if (xdp6_rewrite(ctx, p, to, w == XW_FORWARD))
		return xdp_drop(ctx, REASON_REWRITE_FAILED);
	if (w == XW_LOCAL) {
		/* marked for the TC hook (tc_data.c), best effort as IPv4 */
		if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)) == 0) {
			__u32 *meta = (void *)(long)ctx->data_meta;

			if ((void *)(meta + 1) <= (void *)(long)ctx->data)
				*meta = XDP_META_TRANSLATED;
		}
		return XDP_PASS;
	}
	{
		void	      *data = (void *)(long)ctx->data;
		void	      *end  = (void *)(long)ctx->data_end;
		struct ethhdr *eth  = data;

		if ((void *)(eth + 1) > end)
			return xdp_drop(ctx, REASON_REWRITE_FAILED);
		__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	}
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib->ifindex, 0);
}

/* The conntrack flags whose IPv6 flows XDP translates (as XDP_CT_FLAGS in
 * bpf/xdp_data.c): a tunnelled flow, or one tracked for policy only, is
 * TC's. */
#define XDP6_CT_FLAGS                                                                              \
	(CT_F_SNAT | CT_F_HAIRPIN | CT_F_EXTERNAL | CT_F_HOST_BE | CT_F_POL_DENIED | CT_F_ADOPTED)

/* An IPv6 frame on a data interface. Out of line: its frame (struct pkt6,
 * the FIB parameters) is not added to the IPv4 path's on the stack. */
static __noinline int xdp6_data(struct xdp_md *ctx)
{
	struct bpf_fib_lookup fib;
	struct pkt6	      p = {};
	struct ct6_value     *ct;
	struct ct6_key	      to;
	enum parse_result     pr;
	enum xdp_where	      w;
	enum reason	      r;
	__u64		      now;

	pr = xdp6_parse(ctx, &p);
	if (pr == PARSE_MALFORMED)
		return xdp_drop(ctx, REASON_MALFORMED);
	if (pr != PARSE_OK)
		return XDP_PASS;
	/* From outside, one of the node's own addresses as source is forged
	 * (as in TC). */
	if (node_ip6_flags(&p.tuple.saddr))
		return xdp_drop(ctx, REASON_SPOOFED);
	/* FIN/RST: TC closes the flow. A SYN on a known flow is a reused
	 * client port or a flow reopening while draining; a SYN-ACK on a
	 * closed flow's reply entry a new connection on its port: TC decides
	 * (lib/service6.h ct6_closed_forget()), never translated here. */
	if (p.tuple.proto == IPPROTO_TCP &&
	    (p.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST | TCP_FLAG_SYN)))
		return XDP_PASS;
	/* TC rewrites it and counts it, the stack answers time exceeded. */
	if (p.hop_limit <= 1)
		return XDP_PASS;
	/* longer than the FIB lookup's (and the route cache's) 16-bit length
	 * (a generic-mode frame GRO merged): TC's */
	if (p.l3_len > 0xffff)
		return XDP_PASS;
	now = bpf_ktime_get_ns();
	ct  = ct6_lookup(&p.tuple, now);
	if (!ct)
		return XDP_PASS; /* a new flow, or no service's: TC's */
	if ((ct->flags & (__u8)~XDP6_CT_FLAGS) || (ct->flags & CT_F_PLAIN))
		return XDP_PASS;
	to.saddr  = ct->nat_saddr;
	to.daddr  = ct->nat_daddr;
	to.sport  = ct->nat_sport;
	to.dport  = ct->nat_dport;
	to.proto  = p.tuple.proto;
	to.pad[0] = to.pad[1] = to.pad[2] = 0;

	w = xdp6_route_ct(ctx, &p, &to, ct, &fib, now);
	if (w == XW_STACK)
		return XDP_PASS;
	r = policy6_ct(&p.tuple, ct);
	if (r != REASON_NONE)
		return monitor_on() ? XDP_PASS : xdp_drop(ctx, r);
	xdp6_ct_touch(&p.tuple, ct, p.tcp_flags, now);
	return xdp6_translate(ctx, &p, &to, w, &fib);
}

#endif /* BPFPROXY_XDP6_H */
