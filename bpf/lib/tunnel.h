/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * External traffic to an endpoint on another node, client address kept
 * (bpfExternalServiceMode Tunnel and DSR, Calico's design):
 *
 *   client -> VIP:port  arrives at the ingress node, which picks the backend
 *   (to learn its node), does NOT translate, and carries the packet as it
 *   came to the backend's node in VXLAN built here (outer IPv4/UDP 4789,
 *   flow-hashed source port, UDP checksum 0, no vxlan device). The VNI says
 *   how the reply returns: TUN_VNI_TUNNEL (through the ingress node) or
 *   TUN_VNI_DSR (straight to the client).
 *
 *   The backend's node takes VXLAN with one of those VNIs only from another
 *   node's address (bpfproxy_tun_nodes, from the Node objects' InternalIPs;
 *   any other source: dropped, counted as tunnel-forged), decapsulates, and
 *   NATs the inner packet to one of its own endpoints, recording the
 *   ingress node in conntrack (bpfproxy_ct_tun). The reply is
 *   reverse-translated there (source = VIP:port) and either encapsulated
 *   back to the ingress node, which forwards it to the client as it is, or
 *   (DSR) sent to the client directly.
 *
 * How each flow is carried is decided once, by its first packet, and kept
 * in conntrack (CT_F_TUNNEL + the bpfproxy_ct_tun entry): a mode change
 * applies to new flows only.
 *
 * The header layout (struct tun_outer) and its building (tun_build()) are
 * plain functions over a buffer, for the XDP side to reuse; the skb parts
 * are tun_route() / tun_encap_send() / tun_rx().
 */
#ifndef BPFPROXY_TUNNEL_H
#define BPFPROXY_TUNNEL_H

#include "common.h"
#include "conntrack.h"
#include "drop.h"
#include "maglev.h"
#include "nat.h"
#include "parse.h"
#include "reject.h"

#define TUN_PORT       4789
#define TUN_VNI_TUNNEL 0x627078	  /* "bpx": reply through the ingress node */
#define TUN_VNI_DSR    0x627079	  /* reply straight to the client */
#define TUN_VXLAN_I    0x08000000 /* VXLAN flags word: VNI valid (RFC 7348) */
/* Outer IPv4 + UDP + VXLAN + inner Ethernet. */
#define TUN_OVERHEAD 50
/* Outer source ports: 49152..65535 by flow hash, so a flow stays on one
 * ECMP path / RSS queue and flows spread. */
#define TUN_SPORT_BASE 49152
#define TUN_SPORT_MASK 0x3fff

/* bpf_skb_adjust_room flags (kernel uapi; not in the vendored header). */
#define TUN_ADJ_ENCAP_L3_IPV4 (1ULL << 1)
#define TUN_ADJ_ENCAP_L4_UDP  (1ULL << 4)
#define TUN_ADJ_ENCAP_L2_ETH  (1ULL << 6)
#define TUN_ADJ_ENCAP_L2(len) (((__u64)(len)&0xff) << 56)

/* Other nodes' addresses: VXLAN is taken only from these. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct node_ip_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_tun_nodes SEC(".maps");

/* Endpoints on other nodes -> their node's address (tunnel destination). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct tun_ep_key);
	__type(value, struct tun_ep);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_tun_eps SEC(".maps");

/* bpfDSROptoutCIDRs: clients kept on Tunnel when the mode is DSR. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct dsr_optout_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_dsr_optout SEC(".maps");

/* The one entry: mode for new flows and this node's tunnel address. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tun_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_tun_cfg SEC(".maps");

/* How each tunnelled flow is carried, keyed like bpfproxy_ct (both halves).
 * An LRU of the conntrack map's size: an entry outlives its flow only until
 * space is needed. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 512000); /* agent: bpfMapSizeConntrack */
	__type(key, struct ct_key);
	__type(value, struct ct_tun);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_ct_tun SEC(".maps");

/* Per-CPU, indexed by enum tun_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TUN_COUNTERS);
	__type(key, __u32);
	__type(value, struct reason_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_tun_stats SEC(".maps");

static __always_inline void tun_count_n(enum tun_counter which, __u32 bytes)
{
	__u32		       k = which;
	struct reason_counter *c;

	if (cfg_trace) /* lib/trace.h: no map writes */
		return;
	c = bpf_map_lookup_elem(&bpfproxy_tun_stats, &k);
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline void tun_count(struct __sk_buff *skb, enum tun_counter which)
{
	tun_count_n(which, skb->len);
}

/* ---- header building: plain functions over a buffer --------------------- */

struct vxlanhdr_bpx {
	__be32 flags; /* TUN_VXLAN_I */
	__be32 vni;   /* VNI << 8 */
};

/* The bytes inserted after the outer Ethernet header. */
struct tun_outer {
	struct iphdr	    ip;
	struct udphdr	    udp;
	struct vxlanhdr_bpx vx;
	__u8		    ieth_dst[ETH_ALEN];
	__u8		    ieth_src[ETH_ALEN];
	__be16		    ieth_proto;
} __attribute__((packed));

_Static_assert(sizeof(struct tun_outer) == TUN_OVERHEAD, "tunnel overhead");

/* Outer source port of a flow (its 5-tuple hash). */
static __always_inline __be16 tun_sport(const struct ct_key *t)
{
	return bpf_htons(TUN_SPORT_BASE | (maglev_flow_hash(t) & TUN_SPORT_MASK));
}

/* Fill h: outer IPv4 (src -> dst, DF clear, TTL 64, checksum computed)
 * and UDP (sport -> 4789, checksum 0) around an inner frame of inner_len
 * bytes (inner Ethernet + IPv4), VXLAN with vni, inner Ethernet from smac
 * to dmac. */
static __always_inline void tun_build(struct tun_outer *h, __be32 src, __be32 dst, __be16 sport,
				      __u32 vni, __u32 inner_len, const __u8 *smac,
				      const __u8 *dmac)
{
	__u16 *w   = (__u16 *)h; /* the IPv4 header is at the start */
	__u32  sum = 0;
	int    i;

	__builtin_memset(h, 0, sizeof(*h));
	h->ip.version  = 4;
	h->ip.ihl      = 5;
	h->ip.tot_len  = bpf_htons(sizeof(struct iphdr) + sizeof(struct udphdr) +
				   sizeof(struct vxlanhdr_bpx) + inner_len);
	h->ip.ttl      = 64;
	h->ip.protocol = IPPROTO_UDP;
	h->ip.saddr    = src;
	h->ip.daddr    = dst;
#pragma unroll
	for (i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += w[i];
	h->ip.check   = csum_fold32(sum);
	h->udp.source = sport;
	h->udp.dest   = bpf_htons(TUN_PORT);
	h->udp.len    = bpf_htons(sizeof(struct udphdr) + sizeof(struct vxlanhdr_bpx) + inner_len);
	h->udp.check  = 0;
	h->vx.flags   = bpf_htonl(TUN_VXLAN_I);
	h->vx.vni     = bpf_htonl(vni << 8);
	__builtin_memcpy(h->ieth_dst, dmac, ETH_ALEN);
	__builtin_memcpy(h->ieth_src, smac, ETH_ALEN);
	h->ieth_proto = bpf_htons(ETH_P_IP);
}

/* What a VXLAN packet to one of our addresses says. */
enum tun_rx_result {
	TUN_RX_NOT_OURS = 0, /* another VXLAN user's (VNI, flags): the stack decides */
	TUN_RX_OK,
	TUN_RX_FORGED,	  /* our VNI from an address that is not a node's */
	TUN_RX_MALFORMED, /* our VNI, but headers cut short or inconsistent */
	TUN_RX_INNER6,	  /* ours, the outer headers right, the inner frame IPv6: lib/tunnel6.h */
};

/* service_datapath(): VXLAN of ours whose inner frame is IPv6, now
 * decapsulated (tun_rx()); the data program hands it to the IPv6 path,
 * which reads how it came from skb->cb (lib/tunnel6.h). */
#define TUN_INNER6 (-13)

/* skb->cb of a packet tun_rx() decapsulated to IPv6: [TUN6_CB_MARK] =
 * TUN6_MARK, then the sending node, our address, the VNI. The data program
 * clears the mark of every IPv6 packet it did not decapsulate. */
#define TUN6_CB_MARK  0
#define TUN6_CB_PEER  1
#define TUN6_CB_LOCAL 2
#define TUN6_CB_VNI   3
#define TUN6_MARK     0x62707836 /* "bpx6" */
/* bpf_skb_adjust_room: the decapsulated packet is IPv6 (uapi, 6.3). */
#define TUN_ADJ_DECAP_L3_IPV6 (1ULL << 8)

/* Bytes tun_parse() reads: outer IPv4 (no options) .. inner IPv4 header. */
#define TUN_PARSE_LEN (TUN_OVERHEAD + sizeof(struct iphdr))

/* Check a tunnel packet: buf holds the frame's bytes from the outer IPv4
 * header on (have of them: fewer when the frame is shorter), frame_len the
 * frame's length. is_node says whether the outer source is a node's. */
static __always_inline enum tun_rx_result tun_parse(const __u8 *buf, __u32 have, __u32 frame_len,
						    int is_node, __u32 *vni)
{
	const struct tun_outer *h = (const void *)buf;
	const struct iphdr     *in;
	__u32			v, outer_len, inner_len;

	if (have < sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct vxlanhdr_bpx))
		return TUN_RX_NOT_OURS; /* not even a VXLAN header: nothing says it is ours */
	if (h->ip.ihl != 5)
		return TUN_RX_NOT_OURS; /* we never send options; the header would sit elsewhere */
	v = bpf_ntohl(h->vx.vni) >> 8;
	if (bpf_ntohl(h->vx.flags) != TUN_VXLAN_I || (bpf_ntohl(h->vx.vni) & 0xff) ||
	    (v != TUN_VNI_TUNNEL && v != TUN_VNI_DSR))
		return TUN_RX_NOT_OURS;
	if (!is_node)
		return TUN_RX_FORGED;
	*vni	  = v;
	outer_len = bpf_ntohs(h->ip.tot_len);
	if (have < TUN_PARSE_LEN || outer_len < TUN_PARSE_LEN || outer_len + ETH_HLEN > frame_len)
		return TUN_RX_MALFORMED;
	if (h->ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return TUN_RX_MALFORMED; /* a fragment: the inner packet is not whole */
	if (bpf_ntohs(h->udp.len) != outer_len - sizeof(struct iphdr))
		return TUN_RX_MALFORMED;
	if (h->ieth_proto == bpf_htons(0x86DD)) /* ETH_P_IPV6 */
		return TUN_RX_INNER6;
	if (h->ieth_proto != bpf_htons(ETH_P_IP))
		return TUN_RX_MALFORMED;
	in	  = (const void *)(buf + TUN_OVERHEAD);
	inner_len = bpf_ntohs(in->tot_len);
	if (in->version != 4 || in->ihl < 5 || inner_len < in->ihl * 4 ||
	    inner_len > outer_len - (TUN_OVERHEAD - ETH_HLEN))
		return TUN_RX_MALFORMED;
	return TUN_RX_OK;
}

/* ---- configuration ------------------------------------------------------ */

static __always_inline struct tun_cfg *tun_config(void)
{
	__u32 k = 0;

	return bpf_map_lookup_elem(&bpfproxy_tun_cfg, &k);
}

/* How a new external flow from 'client' to an endpoint on another node is
 * carried: enum ext_mode. DSR turns into Tunnel for opted-out clients. */
static __always_inline __u32 tun_mode_for(const struct tun_cfg *c, __be32 client)
{
	struct dsr_optout_key k = {.prefixlen = 32, .addr = client};

	if (!c || !c->local || c->mode == EXT_M_SNAT)
		return EXT_M_SNAT;
	if (c->mode == EXT_M_DSR && !bpf_map_lookup_elem(&bpfproxy_dsr_optout, &k))
		return EXT_M_DSR;
	return EXT_M_TUNNEL;
}

/* Whether a new flow from 'client' to endpoint 'be' on another node is
 * carried through the tunnel (Tunnel/DSR, its node known), without side
 * effects: TC and XDP decide with it (lib/service.h service_new_decide). */
static __always_inline int tun_carries(__be32 client, __be32 be)
{
	struct tun_ep_key ek = {.addr = be};
	struct tun_ep	 *ep;

	if (tun_mode_for(tun_config(), client) == EXT_M_SNAT)
		return 0;
	ep = bpf_map_lookup_elem(&bpfproxy_tun_eps, &ek);
	return ep && ep->node;
}

/* ---- skb side ----------------------------------------------------------- */

/* Route the encapsulated packet towards peer; the length checked against
 * the route's MTU is the packet's (one segment for GSO) plus the overhead.
 * Returns bpf_fib_lookup()'s result. */
static __always_inline int tun_route(struct __sk_buff *skb, const struct pkt *p, __be32 local,
				     __be32 peer, struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family	 = AF_INET;
	fib->l4_protocol = IPPROTO_UDP;
	fib->dport	 = bpf_htons(TUN_PORT);
	fib->tot_len = (skb->gso_size ? p->ihl_bytes + p->l4_hdr_len + skb->gso_size : p->tot_len) +
		       TUN_OVERHEAD;
	fib->ipv4_src = local;
	fib->ipv4_dst = peer;
	fib->ifindex  = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* What to do when tun_route() says the packet is too big: a DF packet is
 * answered with fragmentation-needed for the MTU left inside the tunnel
 * (quoting it as it is now, so call before any rewrite); without DF it is
 * dropped (the outer packet would have to be fragmented). */
static __always_inline int tun_too_big(struct __sk_buff *skb, const struct pkt *p,
				       const struct bpf_fib_lookup *fib)
{
	__u16 mtu = fib->mtu_result > TUN_OVERHEAD + 68 ? fib->mtu_result - TUN_OVERHEAD : 68;

	if (p->frag & bpf_htons(IP_DF))
		return icmp_reply(skb, p, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu,
				  REASON_FRAG_NEEDED);
	return drop(skb, REASON_FRAG_NEEDED);
}

/* Encapsulate the frame (tuple t, for the source port) from local to peer
 * with vni and send it where tun_route() said (rc, fib). */
static __always_inline int tun_encap_send(struct __sk_buff *skb, const struct ct_key *t,
					  __be32 local, __be32 peer, __u32 vni,
					  const struct bpf_fib_lookup *fib, int rc)
{
	struct tun_outer h;
	__u32		 inner_len = skb->len; /* the frame becomes the inner frame */
	/* No FIXED_GSO: the kernel takes the overhead off a GSO packet's
	 * segment size (bpf_fib_lookup() does not check GSO packets against
	 * the MTU), so its segments fit the link once encapsulated; the
	 * receiving node's decapsulation gives the 50 bytes back. */
	__u64 flags = TUN_ADJ_ENCAP_L3_IPV4 | TUN_ADJ_ENCAP_L4_UDP | TUN_ADJ_ENCAP_L2(ETH_HLEN);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return drop(skb, REASON_TUN_NO_ROUTE);
	/* ENCAP_L2_ETH marks the inner protocol as Ethernet for GSO; kernels
	 * without it refuse the flag: then without. */
	if (bpf_skb_adjust_room(skb, TUN_OVERHEAD, BPF_ADJ_ROOM_MAC,
				flags | TUN_ADJ_ENCAP_L2_ETH) &&
	    bpf_skb_adjust_room(skb, TUN_OVERHEAD, BPF_ADJ_ROOM_MAC, flags))
		return drop(skb, REASON_REWRITE_FAILED);
	tun_build(&h, local, peer, tun_sport(t), vni, inner_len, fib->smac, fib->dmac);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0))
		return drop(skb, REASON_REWRITE_FAILED);
	tun_count(skb, TUN_C_ENCAP);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0))
		return drop(skb, REASON_REWRITE_FAILED);
	return bpf_redirect(fib->ifindex, 0);
}

/* A packet from outside to our tunnel port at one of our addresses
 * (the caller checked): check it and strip the outer headers. Returns
 * TUN_RX_OK (p now describes the inner packet; *peer the sending node,
 * *vni its VNI), TUN_RX_NOT_OURS or TUN_RX_INNER6 (untouched), or a verdict (< 0 never;
 * dropped packets return TUN_RX_FORGED / TUN_RX_MALFORMED after counting:
 * the caller returns TC_ACT_SHOT). */
static __always_inline enum tun_rx_result tun_rx(struct __sk_buff *skb, struct pkt *p, __be32 *peer,
						 __be32 *local, __u32 *vni)
{
	__u8		   buf[TUN_PARSE_LEN];
	struct node_ip_key nk	= {.addr = p->tuple.saddr};
	__u32		   have = skb->len > IP_OFF ? skb->len - IP_OFF : 0;
	enum tun_rx_result r;

	if (have >= TUN_PARSE_LEN)
		have = TUN_PARSE_LEN;
	else if (have >= sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct vxlanhdr_bpx))
		have = sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct vxlanhdr_bpx);
	else
		return TUN_RX_NOT_OURS;
	__builtin_memset(buf, 0, sizeof(buf));
	if (have == TUN_PARSE_LEN
		    ? bpf_skb_load_bytes(skb, IP_OFF, buf, TUN_PARSE_LEN)
		    : bpf_skb_load_bytes(skb, IP_OFF, buf,
					 sizeof(struct iphdr) + sizeof(struct udphdr) +
						 sizeof(struct vxlanhdr_bpx)))
		return TUN_RX_NOT_OURS;
	r = tun_parse(buf, have, skb->len, bpf_map_lookup_elem(&bpfproxy_tun_nodes, &nk) != NULL,
		      vni);
	if (r == TUN_RX_FORGED) {
		drop(skb, REASON_TUN_FORGED);
		return r;
	}
	if (r == TUN_RX_MALFORMED) {
		drop(skb, REASON_TUN_MALFORMED);
		return r;
	}
	if (r == TUN_RX_INNER6) {
		/* An IPv6 service flow: the skb becomes IPv6 (its protocol,
		 * and the Ethernet type left before the inner packet); how it
		 * came goes in skb->cb for the IPv6 path (lib/tunnel6.h).
		 * Kernels before 6.3 refuse the flag: dropped, and the agent
		 * does not announce IPv6 decapsulation there. */
		__be16 proto = bpf_htons(0x86DD); /* ETH_P_IPV6 */

		if (bpf_skb_adjust_room(skb, -TUN_OVERHEAD, BPF_ADJ_ROOM_MAC,
					TUN_ADJ_DECAP_L3_IPV6) ||
		    bpf_skb_store_bytes(skb, 2 * ETH_ALEN, &proto, sizeof(proto), 0)) {
			drop(skb, REASON_REWRITE_FAILED);
			return TUN_RX_MALFORMED;
		}
		skb->cb[TUN6_CB_PEER]  = p->tuple.saddr;
		skb->cb[TUN6_CB_LOCAL] = p->tuple.daddr;
		skb->cb[TUN6_CB_VNI]   = *vni;
		skb->cb[TUN6_CB_MARK]  = TUN6_MARK;
		tun_count(skb, TUN_C_DECAP);
		return r;
	}
	if (r != TUN_RX_OK)
		return r;
	*peer  = p->tuple.saddr;
	*local = p->tuple.daddr;
	/* A GSO packet's segments grow back by the 50 bytes the sender's
	 * encapsulation took off. */
	if (bpf_skb_adjust_room(skb, -TUN_OVERHEAD, BPF_ADJ_ROOM_MAC, 0)) {
		drop(skb, REASON_REWRITE_FAILED);
		return TUN_RX_MALFORMED;
	}
	tun_count(skb, TUN_C_DECAP);
	if (parse_ipv4(skb, p) != PARSE_OK) {
		/* checked above; a fragment or a protocol we do not serve inside */
		drop(skb, REASON_TUN_MALFORMED);
		return TUN_RX_MALFORMED;
	}
	return TUN_RX_OK;
}

/* The tunnel record of a conntrack half, when it has one. */
static __always_inline struct ct_tun *tun_ct_lookup(const struct ct_key *k)
{
	return bpf_map_lookup_elem(&bpfproxy_ct_tun, k);
}

/* Record how a flow is carried, under both halves' keys (fwd and the
 * reverse of 'to'). */
static __always_inline void tun_ct_record(const struct ct_key *fwd, const struct ct_key *to,
					  const struct ct_tun *v)
{
	struct ct_key rk;

	if (cfg_trace) /* lib/trace.h: no map writes */
		return;
	ct_reverse(to, &rk);
	bpf_map_update_elem(&bpfproxy_ct_tun, fwd, v, BPF_ANY);
	bpf_map_update_elem(&bpfproxy_ct_tun, &rk, v, BPF_ANY);
}

/* ---- steps the service datapath takes (also lib/tunnel_svc.h) ----------- */

/* Not a tunnelled packet: the caller goes on as before. */
#define TUN_NOT_TUNNELLED (-3)

static __always_inline __u32 tun_vni_of(__u8 mode)
{
	return mode == EXT_M_DSR ? TUN_VNI_DSR : TUN_VNI_TUNNEL;
}

/* Send the packet as it is to the tunnel's peer. */
static __always_inline int tun_forward_as_is(struct __sk_buff *skb, const struct pkt *p,
					     const struct ct_tun *tv)
{
	struct bpf_fib_lookup fib;
	__be32		      local = tv->local, peer = tv->peer;
	__u32		      vni = tun_vni_of(tv->mode);
	int		      rc  = tun_route(skb, p, local, peer, &fib);

	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return tun_too_big(skb, p, &fib);
	return tun_encap_send(skb, &p->tuple, local, peer, vni, &fib, rc);
}

/* Reverse-translate a reply to 'to' and send it back to the ingress node. */
static __always_inline int tun_reply_encap(struct __sk_buff *skb, struct pkt *p,
					   const struct ct_tun *tv, const struct ct_key *to)
{
	struct bpf_fib_lookup fib;
	__be32		      local = tv->local, peer = tv->peer;
	int		      rc = tun_route(skb, p, local, peer, &fib);

	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return tun_too_big(skb, p, &fib); /* quoted as the endpoint sent it */
	if (nat_rewrite(skb, p, to->saddr, to->sport, to->daddr, to->dport))
		return drop(skb, REASON_REWRITE_FAILED);
	return tun_encap_send(skb, &p->tuple, local, peer, TUN_VNI_TUNNEL, &fib, rc);
}

/* An ICMP error quoting a tunnelled flow whose conntrack half (key k,
 * entry ct) says where it goes: the ingress node passes an error about
 * the reply direction on to the backend's node untranslated (that node
 * holds the translation). TUN_NOT_TUNNELLED: translate it here. */
static __always_inline int tun_icmp_ingress(struct __sk_buff *skb, const struct pkt *p,
					    const struct ct_key *k, const struct ct_value *ct)
{
	struct ct_tun *tvp = tun_ct_lookup(k);
	struct ct_tun  tv;

	if (!tvp || tvp->role != TUN_R_INGRESS || ct->dir != CT_DIR_FWD)
		return TUN_NOT_TUNNELLED;
	tv = *tvp;
	return tun_forward_as_is(skb, p, &tv);
}

/* After translation at the backend's node: an error about the client's
 * packets (the endpoint answered one with ICMP) goes back through the
 * ingress node in Tunnel mode; TUN_NOT_TUNNELLED: route it as usual. */
static __always_inline int tun_icmp_reply(struct __sk_buff *skb, const struct pkt *p,
					  const struct ct_key *k, const struct ct_value *ct)
{
	struct ct_tun *tvp = tun_ct_lookup(k);
	struct ct_tun  tv;

	if (!tvp || tvp->role != TUN_R_BACKEND || tvp->mode != EXT_M_TUNNEL ||
	    ct->dir != CT_DIR_REPLY)
		return TUN_NOT_TUNNELLED;
	tv = *tvp;
	return tun_forward_as_is(skb, p, &tv);
}

#endif /* BPFPROXY_TUNNEL_H */
