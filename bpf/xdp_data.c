// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP on data (uplink) interfaces (--xdp-acceleration): NodePort,
 * LoadBalancer and external-IP traffic from outside, and the replies of
 * remote backends, served before an skb exists. The decisions are TC's own
 * (lib/service.h service_new_decide(), the same conntrack, frontends,
 * backends and policy); only the packet layer differs (lib/xdp.h).
 *
 *  - a flow to a backend on another node, and its replies: translated here
 *    and sent out with XDP_TX (same interface) or bpf_redirect after a FIB
 *    lookup;
 *  - a flow to a backend on this node: translated here and passed up,
 *    marked so that the TC hook does not translate it again;
 *  - an established flow TC tunnels (bpfExternalServiceMode Tunnel/DSR),
 *    client to endpoint: encapsulated here in VXLAN as TC does it;
 *  - an established flow's frames reuse the route its conntrack entry
 *    cached (lib/xdp.h xdp_route_ct());
 *  - IPv6 (lib/xdp6.h): an established flow's frames, both directions,
 *    rewritten from its bpfproxy_ct6 entry and sent by its cached route;
 *  - everything XDP does not finish by itself passes untouched to the TC
 *    hook, which does all of it as without XDP: not IP (ARP), IPv6 but
 *    established flows (lib/xdp6.h says which),
 *    fragments, ICMP (errors about our flows are TC's), SCTP (its CRC32c),
 *    other protocols,
 *    non-service traffic, TCP FIN/RST (closing a flow), new flows while a
 *    monitor listens (its events come from TC), rejects, flows that need a
 *    neighbour resolved or an ICMP fragmentation-needed answer, new
 *    tunnelled flows and the other side of tunnelled ones (decapsulation),
 *    flows tracked for policy only, standby and drain.
 * Drops (malformed, spoofed, outside loadBalancerSourceRanges, policy,
 * ...) are counted in the reason counters as TC counts them.
 *
 * Compiled as part of bpf/bpfproxy.c (one object, shared maps). */
#include "lib/service.h"
#include "lib/xdp.h"
#include "lib/xdp6.h"

/* The conntrack flags whose flows XDP translates; an entry with any other
 * (a tunnelled flow, ...) is TC's. */
#define XDP_CT_FLAGS                                                                               \
	(CT_F_SNAT | CT_F_HAIRPIN | CT_F_EXTERNAL | CT_F_HOST_BE | CT_F_POL_DENIED | CT_F_ADOPTED)

/* A frame of a tunnelled flow (bpfExternalServiceMode Tunnel / DSR,
 * lib/tunnel.h) on its ingress node, client to endpoint: carried as it
 * came in VXLAN to the endpoint's node, the bytes TC's tun_forward_as_is()
 * sends (tun_build(), the flow-hashed source port, the mode's VNI).
 * Everything else of a tunnelled flow is TC's: the reply side, a flow
 * without its tunnel record, no route or no neighbour to the peer, a frame
 * too big for the route once encapsulated (TC answers
 * fragmentation-needed), no headroom. */
static __always_inline int xdp_tunnel_forward(struct xdp_md *ctx, struct pkt *p,
					      struct ct_value *ct, __u64 now)
{
	struct bpf_fib_lookup fib;
	struct ct_fwd	     *c = &ct->fwd;
	__u32		      stamp;
	int		      fresh;
	struct tun_outer      h;
	struct ct_tun	     *tv;
	struct ethhdr	     *eth;
	void		     *data, *end;
	__be32		      local, peer;
	__u32		      vni, len;
	enum reason	      r;
	long		      rc;

	if (ct->dir != CT_DIR_FWD || (ct->flags & CT_F_PLAIN))
		return XDP_PASS;
	tv = tun_ct_lookup(&p->tuple);
	if (!tv || tv->role != TUN_R_INGRESS)
		return XDP_PASS;
	local = tv->local;
	peer  = tv->peer;
	vni   = tun_vni_of(tv->mode);
	/* The route to the peer, cached in the entry as a plain flow's
	 * (lib/xdp.h), for the encapsulated length. */
	stamp = (__u32)(now >> XDP_FWD_SHIFT);
	fresh = c->ifindex && c->where < FWD_TC_REDIRECT &&
		(__u32)(stamp - c->stamp) < XDP_FWD_LIFE;
	if (fresh && c->where == XW_FORWARD && p->tot_len + TUN_OVERHEAD <= c->max_len) {
		fib.ifindex = c->ifindex;
		__builtin_memcpy(fib.dmac, c->dmac, ETH_ALEN);
		__builtin_memcpy(fib.smac, c->smac, ETH_ALEN);
	} else {
		__builtin_memset(&fib, 0, sizeof(fib));
		fib.family	= AF_INET;
		fib.l4_protocol = IPPROTO_UDP;
		fib.dport	= bpf_htons(TUN_PORT);
		fib.tot_len	= p->tot_len + TUN_OVERHEAD;
		fib.ipv4_src	= local;
		fib.ipv4_dst	= peer;
		fib.ifindex	= ctx->ingress_ifindex;
		rc		= bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return XDP_PASS;
		xdp_fwd_fill_len(c, p->tot_len + TUN_OVERHEAD, &fib, XW_FORWARD, 0, stamp, fresh);
	}
	r = policy_ct(&p->tuple, ct);
	if (r != REASON_NONE)
		return monitor_on() ? XDP_PASS : xdp_drop(ctx, r);
	/* the frame becomes the inner frame (its length a plain number: the
	 * verifier refuses a packet pointer spilled in 32 bits) */
	len = ctx->data_end - ctx->data;
	asm volatile("" : "+r"(len));
	if (bpf_xdp_adjust_head(ctx, -(int)TUN_OVERHEAD))
		return XDP_PASS;
	xdp_ct_touch(&p->tuple, ct, p->tcp_flags, now);
	data = (void *)(long)ctx->data;
	end  = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN + sizeof(h) > end)
		return xdp_drop(ctx, REASON_REWRITE_FAILED);
	tun_build(&h, local, peer, tun_sport(&p->tuple), vni, len, fib.smac, fib.dmac);
	eth = data;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	__builtin_memcpy(data + ETH_HLEN, &h, sizeof(h));
	tun_count_n(TUN_C_ENCAP, len + TUN_OVERHEAD);
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);
}

static __always_inline int xdp_established(struct xdp_md *ctx, struct pkt *p, struct ct_value *ct,
					   __u64 now)
{
	struct bpf_fib_lookup fib;
	struct ct_key	      to = {
			.saddr = ct->nat_saddr,
			.sport = ct->nat_sport,
			.daddr = ct->nat_daddr,
			.dport = ct->nat_dport,
			.proto = p->tuple.proto,
	};
	enum xdp_where w;
	enum reason    r;

	if ((ct->flags & CT_F_TUNNEL) && !(ct->flags & (__u8) ~(XDP_CT_FLAGS | CT_F_TUNNEL)))
		return xdp_tunnel_forward(ctx, p, ct, now);
	if (ct->flags & (__u8)~XDP_CT_FLAGS || ct->flags & CT_F_PLAIN)
		return XDP_PASS;
	/* A new connection's SYN-ACK on a closed flow's reply entry: TC
	 * removes the entries and passes it untranslated (lib/service.h
	 * ct_stale_reply()). */
	if (ct_reply_is_stale(p, ct))
		return XDP_PASS;
	w = xdp_route_ct(ctx, p, &to, ct, &fib, now);
	if (w == XW_STACK)
		return XDP_PASS;
	r = policy_ct(&p->tuple, ct);
	if (r != REASON_NONE)
		return monitor_on() ? XDP_PASS : xdp_drop(ctx, r);
	xdp_ct_touch(&p->tuple, ct, p->tcp_flags, now);
	return xdp_translate(ctx, p, &to, w, &fib);
}

static __always_inline int xdp_new(struct xdp_md *ctx, struct pkt *p, const struct fe_value *fe,
				   __u64 now)
{
	struct bpf_fib_lookup fib;
	struct ct_value	     *ct;
	struct ct_key	      to;
	enum xdp_where	      w;
	enum reason	      why = REASON_NONE;
	__u8		      ttl_check;
	__u8		      flags   = 0;
	__u32		      pol_gen = 0;
	int		      err;

	/* Flow events come from TC (lib/monitor.h reads skbs). */
	if (monitor_on())
		return XDP_PASS;
	switch (service_new_decide(ctx, ctx->ingress_ifindex, p, fe, 0, now, &to, &flags, &pol_gen,
				   &why)) {
	case SVC_TRANSLATE:
		break;
	case SVC_DROP:
		return xdp_drop(ctx, why);
	default:
		return XDP_PASS; /* a reject, a flow TC carries through the tunnel, or one TC counts and passes */
	}
	w = xdp_route(ctx, p, &to, &fib, &ttl_check);
	if (w == XW_STACK)
		return XDP_PASS; /* nothing created: TC decides again */
	err = ct_create(&p->tuple, &to, flags, fe->svc_id, pol_gen, now);
	if (err)
		return xdp_drop(ctx, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	/* The route just looked up serves the flow's next frames (the entry
	 * is in cache: created a moment ago). The reply direction fills its
	 * own on its first frame. */
	ct = bpf_map_lookup_elem(&bpfproxy_ct, &p->tuple);
	if (ct)
		xdp_fwd_fill(&ct->fwd, p, &fib, w, ttl_check, (__u32)(now >> XDP_FWD_SHIFT), 0);
	return xdp_translate(ctx, p, &to, w, &fib);
}

/* IPv4. Out of line, as xdp6_data() (lib/xdp6.h) is: the verifier counts
 * a call chain's frames together, and each family's needs room. */
static __noinline int xdp4_data(struct xdp_md *ctx)
{
	struct pkt	   p = {};
	struct node_ip_key nk;
	struct ct_value	  *ct;
	struct fe_value	  *fe;
	enum parse_result  pr;
	__u64		   now;

	pr = parse_ipv4_xdp(ctx, &p);
	if (pr == PARSE_MALFORMED)
		return xdp_drop(ctx, REASON_MALFORMED);
	if (pr != PARSE_OK && pr != PARSE_FRAGMENT)
		return XDP_PASS;
	/* One of the node's own addresses as source from outside is forged
	 * (as in TC, fragments included). */
	nk.addr = p.tuple.saddr;
	if (bpf_map_lookup_elem(&bpfproxy_node_ips, &nk))
		return xdp_drop(ctx, REASON_SPOOFED);
	/* Fragments, the first one included: TC and the stack keep them
	 * together. */
	if (pr == PARSE_FRAGMENT || (p.frag & bpf_htons(IP_MF)) || p.tuple.proto == IPPROTO_ICMP)
		return XDP_PASS;
	/* SCTP: a port rewrite needs its CRC32c adjusted (lib/sctp.h), which
	 * the TC path does; XDP leaves SCTP to it. */
	if (p.tuple.proto == IPPROTO_SCTP)
		return XDP_PASS;
	if (p.tuple.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		return XDP_PASS;

	now = bpf_ktime_get_ns();
	ct  = ct_lookup(&p.tuple, now);
	if (ct)
		return xdp_established(ctx, &p, ct, now);
	fe = lb_lookup(&p.tuple);
	if (!fe)
		return XDP_PASS;
	return xdp_new(ctx, &p, fe, now);
}

SEC("xdp")
int bpfproxy_xdp_data(struct xdp_md *ctx)
{
	if (mode_flags() & (MODE_F_STANDBY | MODE_F_DRAIN))
		return XDP_PASS;
	if (xdp_is_ipv6(ctx))
		return xdp6_data(ctx);
	return xdp4_data(ctx);
}
