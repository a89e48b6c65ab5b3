/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bpfExternalServiceMode Tunnel and DSR for IPv6 services (lib/tunnel.h
 * says what the modes are). The inner packet is IPv6 as the client sent it
 * (its address kept); the carrier is the one the IPv4 path uses between
 * nodes: outer IPv4/UDP 4789 between the nodes' IPv4 InternalIPs, the same
 * VNIs, the same source check (bpfproxy_tun_nodes), inner Ethernet type
 * 0x86dd. As in Cilium, the underlay's family does not follow the inner
 * packet's: one tunnel per node pair whatever the service's family, and
 * an IPv6 underlay would cost 20 more bytes a packet (outer IPv6 is 40
 * bytes) and a UDP checksum (RFC 6935/6936 allow a zero one over IPv6
 * only where the receiver is configured for it) for nothing the IPv4
 * underlay lacks.
 *
 * VXLAN whose inner frame is IPv6 is checked and decapsulated by the IPv4
 * path (lib/tunnel.h tun_rx()), which notes in skb->cb how it came; the
 * data program then runs the IPv6 path on it (bpf/tc_data.c): the same
 * code as for any IPv6 packet, so the verifier checks it once (the data
 * program is near its instruction budget). lib/service6.h reaches this
 * file through these hooks:
 *   tun6_came()         the packet came through the tunnel
 *   tun6_carries()      service6_new(): a new external flow to an endpoint
 *                       on another node goes in the tunnel (SVC6_TUNNEL)
 *   tun6_ingress_new()  service6_packet(): ... and is sent
 *   tun6_backend_new()  service6_packet(): a tunnelled packet of no known
 *                       flow: a new flow to one of our endpoints
 *   tun6_ct_forward()   service6_packet(), service6_host_reply(): a
 *                       packet of a tunnelled flow (CT_F_TUNNEL)
 * Each is out of line with a small frame (the programs are at the
 * verifier's 512-byte stack limit); the three entered per packet are
 * global functions, verified once rather than at every caller state
 * (bpfproxy_data is near the verifier's million instructions: 969,614
 * with these, 959,682 without).
 *
 * Decapsulating an IPv6 packet from IPv4 needs the kernel to set the skb's
 * protocol to IPv6 (BPF_F_ADJ_ROOM_DECAP_L3_IPV6, 6.3): where it refuses
 * the flag the packet is dropped (rewrite-failed); such a node's agent
 * does not say vxlan-v1-ipv6 (src/agent/decap-announce.ts), so other
 * nodes SNAT IPv6 flows to its endpoints.
 */
#ifndef BPFPROXY_TUNNEL6_H
#define BPFPROXY_TUNNEL6_H

#include "tunnel.h"

/* service6_new(): carry the flow in the tunnel; *out names the endpoint. */
#define SVC6_TUNNEL (-11)
/* tun6_ct_forward(): not sent here, the caller translates as usual. */
#define TUN6_TRANSLATE (-12)

/* An IPv6 endpoint on another node (bpfproxy_tun6_eps key); value: struct
 * tun_ep (its node's IPv4 InternalIP). */
struct tun6_ep_key {
	union v6addr addr; /* net */
};

/* bpfDSROptoutCIDRs, IPv6 clients (LPM). Value unused (1). */
struct dsr6_optout_key {
	__u32	     prefixlen; /* host: 0..128 */
	union v6addr addr;	/* net */
};

/* As struct ct_tun, with the IPv6 endpoint; the nodes are IPv4. */
struct ct6_tun {
	__be32	     peer;	   /* net: the other node */
	__be32	     local;	   /* net: this node's tunnel address for the flow */
	union v6addr backend;	   /* net */
	__be16	     backend_port; /* net */
	__u8	     role;	   /* enum tun_role */
	__u8	     mode;	   /* enum ext_mode: EXT_M_TUNNEL or EXT_M_DSR */
};

/* One hop through the tunnel: filled by tun6_route(), sent by tun6_push().
 * On the caller's stack (BPF calls take five arguments). */
struct tun6_hop {
	__be32 local;
	__be32 peer;
	__u32  vni;
	__u32  ifindex;		  /* out: where the route goes */
	__u32  mtu;		  /* out: the route's MTU (too big) */
	__s32  rc;		  /* out: bpf_fib_lookup()'s result */
	__u8   mac[2 * ETH_ALEN]; /* out: next hop's, then ours */
};

/* Whether the packet came through the tunnel (lib/tunnel.h tun_rx()
 * decapsulated it; the data program clears the mark of the others). */
static __always_inline int tun6_came(const struct __sk_buff *skb)
{
	return skb->cb[TUN6_CB_MARK] == TUN6_MARK;
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct tun6_ep_key);
	__type(value, struct tun_ep);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_tun6_eps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct dsr6_optout_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_dsr6_optout SEC(".maps");

/* As bpfproxy_ct_tun, keyed like bpfproxy_ct6. An LRU is preallocated: a
 * quarter of the conntrack size (agent: bpfMapSizeConntrack / 4), so a
 * node without IPv6 tunnelled flows pays about 15 MiB, not 60. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128000);
	__type(key, struct ct6_key);
	__type(value, struct ct6_tun);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_ct6_tun SEC(".maps");

/* How a new external flow from 'client' is carried (as tun_mode_for()). */
static __always_inline __u32 tun6_mode_for(const struct tun_cfg *c, const union v6addr *client)
{
	struct dsr6_optout_key k = {.prefixlen = 128, .addr = *client};

	if (!c || !c->local || c->mode == EXT_M_SNAT)
		return EXT_M_SNAT;
	if (c->mode == EXT_M_DSR && !bpf_map_lookup_elem(&bpfproxy_dsr6_optout, &k))
		return EXT_M_DSR;
	return EXT_M_TUNNEL;
}

/* The node of an IPv6 endpoint on another node; 0: not known (SNAT). */
static __always_inline __be32 tun6_node_of(const union v6addr *be)
{
	struct tun6_ep_key k = {.addr = *be};
	struct tun_ep	  *ep;

	ep = bpf_map_lookup_elem(&bpfproxy_tun6_eps, &k);
	return ep ? ep->node : 0;
}

/* As tun_carries(): whether a new flow from 'client' to 'be' goes in the
 * tunnel. No side effects. */
static __always_inline int tun6_carries(const union v6addr *client, const union v6addr *be)
{
	if (tun6_mode_for(tun_config(), client) == EXT_M_SNAT)
		return 0;
	return tun6_node_of(be) != 0;
}

/* The outer source port: the flow's hash over its addresses folded to 32
 * bits (as lib/lb6.h's Maglev hash), so a flow keeps one port. */
static __always_inline __be16 tun6_sport(const struct ct6_key *t)
{
	struct ct_key h = {
		.saddr = t->saddr.w[0] ^ t->saddr.w[1] ^ t->saddr.w[2] ^ t->saddr.w[3],
		.daddr = t->daddr.w[0] ^ t->daddr.w[1] ^ t->daddr.w[2] ^ t->daddr.w[3],
		.sport = t->sport,
		.dport = t->dport,
		.proto = t->proto,
	};

	return tun_sport(&h);
}

/* Route the packet once encapsulated from h->local to h->peer: fills h's
 * out fields; the length checked against the route's MTU is the packet's
 * (one segment for GSO) plus the overhead. */
static __noinline int tun6_route(struct __sk_buff *skb, const struct pkt6 *p, struct tun6_hop *h)
{
	struct bpf_fib_lookup fib;

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family	= AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.dport	= bpf_htons(TUN_PORT);
	fib.tot_len	= fib6_len(skb, p) + TUN_OVERHEAD;
	fib.ipv4_src	= h->local;
	fib.ipv4_dst	= h->peer;
	fib.ifindex	= skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	h->rc		= bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	h->ifindex	= fib.ifindex;
	h->mtu		= fib.mtu_result;
	__builtin_memcpy(h->mac, fib.dmac, ETH_ALEN);
	__builtin_memcpy(h->mac + ETH_ALEN, fib.smac, ETH_ALEN);
	return 0;
}

/* Too big for the tunnel's route: the caller answers packet too big for
 * 'mtu' (tun6_answer()), in its frame: under these calls the answer would
 * pass the verifier's stack limit. */
#define TUN6_TOO_BIG(mtu) (-0x10000 - (int)(mtu))

/* What tun6_route() left that is not a way out: too big (packet too big
 * for the MTU left inside the tunnel: IPv6 has no DF, so it is always
 * answered, quoting the packet as it came: checked before any rewrite),
 * or no route. TUN6_TRANSLATE: the route is there. */
static __always_inline int tun6_no_way(struct __sk_buff *skb, const struct tun6_hop *h)
{
	if (h->rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return TUN6_TOO_BIG(h->mtu > TUN_OVERHEAD + 1280 ? h->mtu - TUN_OVERHEAD : 1280);
	if (h->rc != BPF_FIB_LKUP_RET_SUCCESS && h->rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return drop(skb, REASON_TUN_NO_ROUTE);
	return TUN6_TRANSLATE;
}

/* A global tunnel step's verdict (a TC action), bounded for the verifier:
 * its callers then never walk their own return codes' paths for it. */
static __always_inline int tun6_verdict(int rc)
{
	return rc >= TC_ACT_OK && rc <= TC_ACT_REDIRECT ? rc : TC_ACT_SHOT;
}

/* The verdict of what a tunnel step returned: TUN6_TOO_BIG answered.
 * Always a TC verdict the verifier sees bounded: the global calls'
 * results are unknown scalars, and the callers' checks of their own
 * return codes (service6_datapath(): SVC6_ICMP_ERROR) would otherwise be
 * verified on every such path (the pod program went over 1M instructions). */
static __always_inline int tun6_answer(struct __sk_buff *skb, const struct pkt6 *p, int rc)
{
	if (rc <= TUN6_TOO_BIG(0) && rc >= TUN6_TOO_BIG(0xffff))
		rc = icmp6_reply(skb, p, ICMPV6_PKT_TOOBIG << 8, TUN6_TOO_BIG(0) - rc,
				 REASON_FRAG_NEEDED);
	if (rc < TC_ACT_OK || rc > TC_ACT_REDIRECT)
		return TC_ACT_SHOT;
	return rc;
}

/* tun6_push(): a helper failed; the caller drops the packet (here it
 * would be a call too deep for the verifier). */
#define TUN6_PUSH_FAILED (-14)

/* Encapsulate the (IPv6) frame as h says and send it where tun6_route()
 * found; 'sport' the flow's outer source port. */
static __noinline int tun6_push(struct __sk_buff *skb, const struct tun6_hop *h, __be16 sport)
{
	struct tun_outer o;
	__be16		 ip = bpf_htons(ETH_P_IP);
	__u64 flags = TUN_ADJ_ENCAP_L3_IPV4 | TUN_ADJ_ENCAP_L4_UDP | TUN_ADJ_ENCAP_L2(ETH_HLEN);

	tun_build(&o, h->local, h->peer, sport, h->vni, skb->len, h->mac + ETH_ALEN, h->mac);
	o.ieth_proto = bpf_htons(ETH_P_IPV6);
	/* As tun_encap_send(): without ENCAP_L2_ETH on kernels that refuse it. */
	if (bpf_skb_adjust_room(skb, TUN_OVERHEAD, BPF_ADJ_ROOM_MAC,
				flags | TUN_ADJ_ENCAP_L2_ETH) &&
	    bpf_skb_adjust_room(skb, TUN_OVERHEAD, BPF_ADJ_ROOM_MAC, flags))
		return TUN6_PUSH_FAILED;
	/* the outer headers; the outer Ethernet header: the route's
	 * addresses, type IPv4 now */
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &o, sizeof(o), 0) ||
	    bpf_skb_store_bytes(skb, 0, h->mac, sizeof(h->mac), 0) ||
	    bpf_skb_store_bytes(skb, 2 * ETH_ALEN, &ip, sizeof(ip), 0))
		return TUN6_PUSH_FAILED;
	tun_count(skb, TUN_C_ENCAP);
	if (h->rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(h->ifindex, NULL, 0, 0);
	return bpf_redirect(h->ifindex, 0);
}

/* Record how a flow is carried under both halves' keys (fwd and the
 * reverse of 'to'). A call of its own: the reversed key stays off the
 * callers' frames. */
static __noinline int tun6_ct_record(const struct ct6_key *fwd, const struct ct6_key *to,
				     const struct ct6_tun *v)
{
	struct ct6_key rk;

	if (cfg_trace) /* lib/trace.h: no map writes */
		return 0;
	ct6_reverse(to, &rk);
	bpf_map_update_elem(&bpfproxy_ct6_tun, fwd, v, BPF_ANY);
	bpf_map_update_elem(&bpfproxy_ct6_tun, &rk, v, BPF_ANY);
	return 0;
}

/* A new flow from outside to an external frontend whose chosen endpoint
 * ('to': the endpoint) is on another node, as tun_ingress_new(): carried as
 * it came; the conntrack entries (untranslated) and the tunnel record are
 * made once the packet is on its way. */
__noinline int tun6_ingress_new(struct __sk_buff *skb, struct pkt6 *p, const struct fe_value *fe,
				const struct ct6_key *to)
{
	struct tun_cfg *c  = tun_config();
	struct ct6_tun	tv = {};
	struct tun6_hop h  = {};
	__u32		svc_id;
	int		rc, err;

	if (!p || !fe || !to) /* a global function's pointers may be NULL */
		return TC_ACT_SHOT;
	svc_id	= fe->svc_id;
	tv.mode = tun6_mode_for(c, &p->tuple.saddr);
	tv.peer = tv.mode == EXT_M_SNAT ? 0 : tun6_node_of(&to->daddr);
	/* The endpoint's node was known a moment ago (tun6_carries()); if the
	 * agent has just removed it the packet goes nowhere: the client
	 * retries. */
	if (!c || !tv.peer)
		return drop(skb, REASON_TUN_NO_ROUTE);
	tv.local	= c->local;
	tv.backend	= to->daddr;
	tv.backend_port = to->dport;
	tv.role		= TUN_R_INGRESS;
	h.local		= tv.local;
	h.peer		= tv.peer;
	h.vni		= tun_vni_of(tv.mode);
	tun6_route(skb, p, &h);
	rc = tun6_no_way(skb, &h);
	if (rc != TUN6_TRANSLATE)
		return rc; /* answered or dropped (counted): no state */
	rc = tun6_push(skb, &h, tun6_sport(&p->tuple));
	if (rc == TUN6_PUSH_FAILED)
		return drop(skb, REASON_REWRITE_FAILED);
	if (rc != TC_ACT_REDIRECT)
		return rc;
	/* Nothing is translated here: both halves keep the tuple as sent. */
	err = ct6_create(&p->tuple, &p->tuple, CT_F_EXTERNAL | CT_F_TUNNEL, svc_id,
			 bpf_ktime_get_ns());
	if (err)
		return drop(skb, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	tun6_ct_record(&p->tuple, &p->tuple, &tv);
	tun_count(skb, tv.mode == EXT_M_DSR ? TUN_C_NEW_DSR : TUN_C_NEW_TUNNEL);
	monitor_flow_new6(skb, MON_HOOK_DATA, &p->tuple, &p->tuple);
	return rc;
}

/* As tun_follow_ingress(): the backend's node, a client's packet of a
 * tunnelled flow ('cur': its record) that came another way than the record
 * says: the replies follow it (through the node it came from, its VNI
 * saying Tunnel or DSR; or, not tunnelled, straight back to the client).
 * Returns TUN6_TRANSLATE: the packet goes on to the endpoint. */
static __noinline int tun6_follow_ingress(struct __sk_buff *skb, const struct ct6_key *fwd,
					  const struct ct6_key *to, const struct ct6_tun *cur)
{
	struct ct6_tun tv    = *cur;
	int	       came  = tun6_came(skb);
	__be32	       peer  = came ? skb->cb[TUN6_CB_PEER] : tv.peer;
	__be32	       local = came ? skb->cb[TUN6_CB_LOCAL] : tv.local;
	__u8 mode = came && skb->cb[TUN6_CB_VNI] != TUN_VNI_DSR ? EXT_M_TUNNEL : EXT_M_DSR;

	if (peer == tv.peer && local == tv.local && mode == tv.mode)
		return TUN6_TRANSLATE;
	tv.peer	 = peer;
	tv.local = local;
	tv.mode	 = mode;
	if (cfg_trace) /* lib/trace.h: no map writes */
		return TUN6_TRANSLATE;
	tun6_ct_record(fwd, to, &tv);
	tun_count(skb, TUN_C_MOVED);
	return TUN6_TRANSLATE;
}

/* Send the packet to the other node as h says: routed, too big answered
 * by the caller (TUN6_TOO_BIG), with 'rw' rewritten to it first (a
 * reply's reverse translation), encapsulated. */
static __noinline int tun6_send(struct __sk_buff *skb, struct pkt6 *p, struct tun6_hop *h,
				const struct ct6_key *rw)
{
	__be16 sport = tun6_sport(&p->tuple);
	int    rc;

	tun6_route(skb, p, h);
	rc = tun6_no_way(skb, h);
	if (rc != TUN6_TRANSLATE)
		return rc;
	if (rw && nat6_rewrite(skb, p, rw))
		return drop(skb, REASON_REWRITE_FAILED);
	rc = tun6_push(skb, h, sport);
	return rc == TUN6_PUSH_FAILED ? drop(skb, REASON_REWRITE_FAILED) : rc;
}

/* tun6_ct_forward()'s 'how': the entry's direction, and whether the packet
 * came from a pod. */
#define TUN6_FROM_POD 0x100

/* A packet of a tunnelled flow (conntrack hit with CT_F_TUNNEL; 'to' its
 * entry's rewrite), as tun_ct_forward(); 'how': the entry's direction |
 * TUN6_FROM_POD. Returns a verdict, or TUN6_TRANSLATE: the caller rewrites to
 * 'to' and forwards as for any flow (the ingress node's replies, DSR
 * replies, the client's packets at the backend's node; a flow whose record
 * is gone). */
__noinline int tun6_ct_forward(struct __sk_buff *skb, struct pkt6 *p, __u32 how,
			       const struct ct6_key *to)
{
	struct ct6_tun *tvp;
	struct tun6_hop h   = {};
	__u32		dir = how & 0xff;
	__u8		role, mode;

	if (!p || !to) /* a global function's pointers may be NULL */
		return TC_ACT_SHOT;
	tvp = bpf_map_lookup_elem(&bpfproxy_ct6_tun, &p->tuple);
	if (!tvp)
		return TUN6_TRANSLATE;
	role = tvp->role;
	mode = tvp->mode;
	if (role == TUN_R_BACKEND && dir == CT_DIR_FWD && !(how & TUN6_FROM_POD))
		return tun6_follow_ingress(skb, &p->tuple, to, tvp);
	if (role == TUN_R_BACKEND && dir == CT_DIR_REPLY && mode != EXT_M_TUNNEL) {
		tun_count(skb, TUN_C_DSR_REPLY);
		return TUN6_TRANSLATE;
	}
	if (!(role == TUN_R_INGRESS && dir == CT_DIR_FWD) &&
	    !(role == TUN_R_BACKEND && dir == CT_DIR_REPLY))
		return TUN6_TRANSLATE;
	/* To the other node: the client's packets as they came; the
	 * replies (Tunnel) reverse-translated. */
	h.local = tvp->local;
	h.peer	= tvp->peer;
	h.vni	= role == TUN_R_INGRESS ? tun_vni_of(mode) : TUN_VNI_TUNNEL;
	return tun6_send(skb, p, &h, role == TUN_R_BACKEND ? to : NULL);
}

/* The frontend of a packet that came through the tunnel: as addressed, or
 * the NodePort wildcard (the address is the ingress node's, not ours). */
static __always_inline struct fe_value *tun6_lb_lookup(const struct ct6_key *t)
{
	struct fe6_key	 k = {.addr = t->daddr, .port = t->dport, .proto = t->proto};
	struct fe_value *fe;

	fe = bpf_map_lookup_elem(&bpfproxy_fe6, &k);
	if (fe)
		return fe;
	__builtin_memset(&k.addr, 0, sizeof(k.addr));
	fe = bpf_map_lookup_elem(&bpfproxy_fe6, &k);
	return fe && (fe->flags & FE_F_NODEPORT) ? fe : NULL;
}

/* As tun_backend_new(): a packet that came through the tunnel (tun6_came())
 * and opens no flow we know, to frontend 'fe' (tun6_lb_lookup()): a new
 * flow to one of our own endpoints, client address kept. Returns
 * SVC6_TRANSLATE with *out (service6_packet() checks policy and
 * translates, as for service6_new()), or a verdict. */
__noinline int tun6_backend_new(struct __sk_buff *skb, struct pkt6 *p, const struct fe_value *fe,
				struct ct6_key *out)
{
	struct backend6 be    = {};
	struct ct6_tun	tv    = {};
	__u8		flags = CT_F_EXTERNAL | CT_F_TUNNEL;
	__u64		now   = bpf_ktime_get_ns();
	enum reason	r;
	int		err;

	if (!p || !fe || !out) /* a global function's pointers may be NULL */
		return TC_ACT_SHOT;
	if (!ct_opens_flow(p->tuple.proto, p->tcp_flags))
		return drop(skb, REASON_TUN_NO_FLOW);
	if (!(fe->flags & FE_F_EXTERNAL))
		return drop(skb, REASON_TUN_NO_FLOW);
	/* The ingress node chose this node; any of our endpoints serves. */
	r = lb6_select(fe, 1, &p->tuple, now, &be);
	if (r != REASON_NONE)
		return drop(skb, r == REASON_NO_ENDPOINTS ? REASON_NO_LOCAL_ENDPOINTS : r);
	out->saddr  = p->tuple.saddr;
	out->sport  = p->tuple.sport;
	out->daddr  = be.addr;
	out->dport  = be.port;
	out->proto  = p->tuple.proto;
	out->pad[0] = out->pad[1] = out->pad[2] = 0;
	if (node_ip6_flags(&be.addr))
		flags |= CT_F_HOST_BE;
	if (!ct6_reply_free(&p->tuple, out, now)) {
		flags |= CT_F_SNAT; /* the client's port is remapped, its address kept */
		if (snat6_pick_port(&p->tuple, out, now))
			return drop(skb, REASON_NAT_PORTS);
	}
	err = ct6_create(&p->tuple, out, flags, fe->svc_id, now);
	if (err)
		return drop(skb, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	tv.peer		= skb->cb[TUN6_CB_PEER];
	tv.local	= skb->cb[TUN6_CB_LOCAL];
	tv.backend	= be.addr;
	tv.backend_port = be.port;
	tv.role		= TUN_R_BACKEND;
	tv.mode		= skb->cb[TUN6_CB_VNI] == TUN_VNI_DSR ? EXT_M_DSR : EXT_M_TUNNEL;
	tun6_ct_record(&p->tuple, out, &tv);
	tun_count(skb, TUN_C_NEW_REMOTE);
	monitor_flow_new6(skb, MON_HOOK_DATA, &p->tuple, out);
	return SVC6_TRANSLATE;
}

#endif /* BPFPROXY_TUNNEL6_H */
