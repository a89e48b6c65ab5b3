/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The packet layer of XDP acceleration (bpf/xdp_data.c): what differs from
 * the TC hooks once the shared decisions (lib/service.h) are taken. The TC
 * helpers write through the skb (bpf_skb_store_bytes, l3/l4_csum_replace);
 * here the frame is written in place and the checksums are updated
 * incrementally (RFC 1624, lib/common.h csum_replace4/2).
 *
 * A frame XDP translated and passed up (to a local backend) carries 4 bytes
 * of metadata, XDP_META_TRANSLATED (lib/service.h), in front of its data: the TC hook on
 * the same interface sees them (skb->data_meta) and leaves the packet
 * alone, so nothing is translated twice and conntrack is updated once.
 */
#ifndef BPFPROXY_XDP_H
#define BPFPROXY_XDP_H

#include "common.h"
#include "config.h"
#include "drop.h"
#include "fib.h"
#include "parse.h"
#include "service.h"

/* Count a packet under a reason (the counters TC uses; no monitor event:
 * lib/monitor.h reads skbs, and the XDP program passes every packet that
 * would make an event to TC while a monitor listens). */
static __always_inline void xdp_count(struct xdp_md *ctx, enum reason r)
{
	__u32		       k = r;
	struct reason_counter *c;

	if (cfg_trace)
		return;
	c = bpf_map_lookup_elem(&bpfproxy_reasons, &k);
	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
}

static __always_inline int xdp_drop(struct xdp_md *ctx, enum reason r)
{
	xdp_count(ctx, r);
	return XDP_DROP;
}

/* Where a translated frame goes. */
enum xdp_where {
	XW_STACK = 0, /* untouched to TC and the stack: they do all of it */
	XW_LOCAL,     /* translated, passed up: the stack delivers it on this node */
	XW_FORWARD,   /* translated, sent out by XDP_TX / bpf_redirect */
};

/* Route the translated tuple and say who sends the frame on. Anything the
 * XDP path does not finish by itself goes to the stack untouched: no
 * neighbour entry yet (TC's bpf_redirect_neigh resolves it), too big for
 * the route (TC answers fragmentation-needed), TTL spent, FIB
 * forwarding off, a source that the stack would take for a martian.
 * *ttl_check: whether a TTL of 1 or less would have sent it to the stack. */
static __always_inline enum xdp_where xdp_route(struct xdp_md *ctx, const struct pkt *p,
						const struct ct_key *to, struct bpf_fib_lookup *fib,
						__u8 *ttl_check)
{
	struct pod_if_key  pk;
	struct node_ip_key nk;
	long		   rc;

	*ttl_check = 0;
	if (!cfg_fib_redirect)
		return XW_STACK;
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family	 = AF_INET;
	fib->l4_protocol = to->proto;
	fib->sport	 = to->sport;
	fib->dport	 = to->dport;
	fib->tot_len	 = p->tot_len;
	fib->ipv4_src	 = to->saddr;
	fib->ipv4_dst	 = to->daddr;
	fib->ifindex	 = ctx->ingress_ifindex;
	rc		 = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) {
		/* for this host (a host-network backend) */
		fib->ifindex = ctx->ingress_ifindex;
		nk.addr	     = to->saddr;
		return bpf_map_lookup_elem(&bpfproxy_node_ips, &nk) ? XW_STACK : XW_LOCAL;
	}
	*ttl_check = 1;
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || p->ttl <= 1)
		return XW_STACK;
	/* the FIB names the interface also when the neighbour is unknown */
	pk.ifindex = fib->ifindex;
	if (bpf_map_lookup_elem(&bpfproxy_pod_ifs, &pk)) {
		/* A pod here. XDP cannot hand a frame into the pod's namespace
		 * (a veth peer without an XDP program drops redirected
		 * frames): the stack forwards it, unless its new source is
		 * one of ours, which the stack would drop as a martian. */
		nk.addr = to->saddr;
		return bpf_map_lookup_elem(&bpfproxy_node_ips, &nk) ? XW_STACK : XW_LOCAL;
	}
	return rc == BPF_FIB_LKUP_RET_SUCCESS ? XW_FORWARD : XW_STACK;
}

/* The forwarding cache in the conntrack entry (struct ct_fwd): time in
 * units of 2^20 ns (about 1.05 ms), an entry good for XDP_FWD_LIFE of them
 * (about a second) after the lookup that filled it. Nothing tells the
 * program when a route or a neighbour changes: for up to that second a
 * flow keeps the egress interface and MAC addresses it had (as a flow
 * keeps a route cached in its socket), then looks them up again. A frame
 * longer than any the route took is looked up again at once (the route's
 * MTU is checked by the lookup, and a smaller MTU sends it to TC for
 * fragmentation-needed). Filled by whichever CPU sees the flow; a reader
 * on another CPU racing a refill may mix the old and the new result for
 * one frame (ifindex is written last, so a first fill is never read half
 * done on x86). */
#define XDP_FWD_SHIFT FWD_CACHE_SHIFT /* lib/fib.h, shared with TC */
#define XDP_FWD_LIFE  FWD_CACHE_LIFE

/* Remember where xdp_route() said the flow's frames go (w: not XW_STACK). */
static __always_inline void xdp_fwd_fill_len(struct ct_fwd *c, __u16 len,
					     const struct bpf_fib_lookup *fib, enum xdp_where w,
					     __u8 ttl_check, __u32 stamp, int fresh)
{
	if (cfg_trace) /* lib/trace.h: no map writes */
		return;
	/* the same route taking a longer frame: the longest so far */
	c->max_len   = fresh && c->ifindex == fib->ifindex && c->max_len > len ? c->max_len : len;
	c->where     = w;
	c->ttl_check = ttl_check;
	__builtin_memcpy(c->dmac, fib->dmac, ETH_ALEN);
	__builtin_memcpy(c->smac, fib->smac, ETH_ALEN);
	c->stamp = stamp;
	asm volatile("" ::: "memory");
	c->ifindex = fib->ifindex;
}

static __always_inline void xdp_fwd_fill(struct ct_fwd *c, const struct pkt *p,
					 const struct bpf_fib_lookup *fib, enum xdp_where w,
					 __u8 ttl_check, __u32 stamp, int fresh)
{
	xdp_fwd_fill_len(c, p->tot_len, fib, w, ttl_check, stamp, fresh);
}

static __always_inline enum xdp_where xdp_route_ct(struct xdp_md *ctx, const struct pkt *p,
						   const struct ct_key *to, struct ct_value *ct,
						   struct bpf_fib_lookup *fib, __u64 now)
{
	struct ct_fwd *c     = &ct->fwd;
	__u32	       stamp = (__u32)(now >> XDP_FWD_SHIFT);
	/* an entry TC filled (lib/fib.h) is not ours to read */
	int fresh = c->ifindex && c->where < FWD_TC_REDIRECT &&
		    (__u32)(stamp - c->stamp) < XDP_FWD_LIFE;
	enum xdp_where w;
	__u8	       ttl_check;

	if (fresh && p->tot_len <= c->max_len && !(c->ttl_check && p->ttl <= 1)) {
		fib->ifindex = c->ifindex;
		__builtin_memcpy(fib->dmac, c->dmac, ETH_ALEN);
		__builtin_memcpy(fib->smac, c->smac, ETH_ALEN);
		return c->where;
	}
	w = xdp_route(ctx, p, to, fib, &ttl_check);
	if (w != XW_STACK)
		xdp_fwd_fill(c, p, fib, w, ttl_check, stamp, fresh);
	return w;
}

/* What a packet of an established flow changes in its entry is the
 * deadline alone; it is written when it moves by more than an eighth of
 * the flow's lifetime, at most a second (as Cilium reports at an
 * interval), so that the entry is not written for every packet. Anything
 * else (a SYN, FIN or RST, a flow not established or closing) goes
 * through ct_update() as in TC. An idle flow may so expire up to that
 * much earlier than the same flow through TC. */
#define XDP_CT_SLACK_NS 1000000000ULL

static __always_inline void xdp_ct_touch(const struct ct_key *k, struct ct_value *v, __u8 tcp_flags,
					 __u64 now)
{
	__u64 life, slack, exp;

	if (!(v->state & CT_S_ESTABLISHED) ||
	    (v->state & (CT_S_RST | CT_S_FIN_FWD | CT_S_FIN_REPLY)) ||
	    (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST))) {
		ct_update(k, v, tcp_flags, now);
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

/* Rewrite the frame's tuple p->tuple into 'to' in place, TTL decremented
 * when we forward it ourselves. Returns 0, or -1 when the frame is shorter
 * than the parse said (the caller drops it). */
static __always_inline int xdp_rewrite(struct xdp_md *ctx, struct pkt *p, const struct ct_key *to,
				       int dec_ttl)
{
	void	     *data = (void *)(long)ctx->data;
	void	     *end  = (void *)(long)ctx->data_end;
	struct iphdr *ip   = data + ETH_HLEN;
	__u32	      off  = p->l4_off;
	__u16	     *l4c;
	__be16	     *ports;
	__u16	      c;

	if ((void *)(ip + 1) > end || off > ETH_HLEN + 60)
		return -1;
	ports = data + off;
	if (p->tuple.proto == IPPROTO_TCP) {
		struct tcphdr *th = data + off;

		if ((void *)(th + 1) > end)
			return -1;
		l4c = &th->check;
	} else {
		struct udphdr *uh = data + off;

		if ((void *)(uh + 1) > end)
			return -1;
		l4c = &uh->check;
	}
	c = *l4c;
	/* A UDP checksum of 0: none was sent, none is made up. */
	if (!(p->tuple.proto == IPPROTO_UDP && c == 0)) {
		if (p->tuple.saddr != to->saddr)
			c = csum_replace4(c, p->tuple.saddr, to->saddr);
		if (p->tuple.daddr != to->daddr)
			c = csum_replace4(c, p->tuple.daddr, to->daddr);
		if (p->tuple.sport != to->sport)
			c = csum_replace2(c, p->tuple.sport, to->sport);
		if (p->tuple.dport != to->dport)
			c = csum_replace2(c, p->tuple.dport, to->dport);
		if (p->tuple.proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*l4c = c;
	}
	c = ip->check;
	if (p->tuple.saddr != to->saddr)
		c = csum_replace4(c, p->tuple.saddr, to->saddr);
	if (p->tuple.daddr != to->daddr)
		c = csum_replace4(c, p->tuple.daddr, to->daddr);
	if (dec_ttl) {
		/* TTL and protocol share the 16-bit word at offset 8 */
		c	= csum_replace2(c, bpf_htons(((__u16)p->ttl << 8) | p->tuple.proto),
					bpf_htons(((__u16)(p->ttl - 1) << 8) | p->tuple.proto));
		ip->ttl = p->ttl - 1;
	}
	ip->check      = c;
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

/* Translate and send the frame where xdp_route() said. */
static __always_inline int xdp_translate(struct xdp_md *ctx, struct pkt *p, const struct ct_key *to,
					 enum xdp_where w, const struct bpf_fib_lookup *fib)
{
	if (xdp_rewrite(ctx, p, to, w == XW_FORWARD))
		return xdp_drop(ctx, REASON_REWRITE_FAILED);
	if (w == XW_LOCAL) {
		/* Tell the TC hook it is done (best effort: without room for
		 * metadata TC finds neither a flow nor a frontend for the
		 * translated tuple and passes it on all the same). */
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

#endif /* BPFPROXY_XDP_H */
