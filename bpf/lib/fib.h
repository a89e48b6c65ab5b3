/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Forwarding of translated packets. A translated packet may carry one of the
 * node's own addresses as its source (NodePort replies, SNAT), which the
 * stack's input path rejects as martian; so we route it ourselves with the
 * FIB and redirect it to the egress device, as a router would (TTL
 * decremented). Packets for this host, or that the FIB cannot place, go to
 * the stack.
 */
#ifndef BPFPROXY_FIB_H
#define BPFPROXY_FIB_H

#include "common.h"
#include "config.h"
#include "drop.h"
#include "lb.h"
#include "nat.h"

/* The length the next hop must carry, checked against the route's MTU (a
 * route 'mtu' included): one segment for GSO packets. */
static __always_inline __u16 fib_len(const struct __sk_buff *skb, const struct pkt *p)
{
	return skb->gso_size ? p->ihl_bytes + p->l4_hdr_len + skb->gso_size : p->tot_len;
}

/* Route the translated tuple 'to' before the packet is rewritten, so that a
 * too-big packet can still be answered as the client sent it. */
static __always_inline int fib_route(struct __sk_buff *skb, const struct pkt *p,
				     const struct ct_key *to, struct bpf_fib_lookup *fib)
{
	if (!cfg_fib_redirect)
		return -1;
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family	 = AF_INET;
	fib->l4_protocol = to->proto;
	fib->sport	 = to->sport;
	fib->dport	 = to->dport;
	fib->tot_len	 = fib_len(skb, p);
	fib->ipv4_src	 = to->saddr;
	fib->ipv4_dst	 = to->daddr;
	fib->ifindex	 = skb->ingress_ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* Host-side veths of pods (written by the agent's attacher): a packet for a
 * pod goes straight into the pod's namespace, skipping the veth's transmit
 * and backlog hop (as Cilium's and Calico's host routing do). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pod_if_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_pod_ifs SEC(".maps");

/* The forwarding cache in a conntrack entry (struct ct_fwd, lib/types.h),
 * shared by the XDP program (lib/xdp.h) and the TC hooks: time in units of
 * 2^20 ns (about 1.05 ms), a result good for FWD_CACHE_LIFE of them (about
 * a second) after the lookup that filled it; 'where' says who filled it
 * (enum xdp_where below FWD_TC_REDIRECT, else TC), and each reads only its
 * own (a flow whose packets alternate between the hooks looks up each
 * time, as before the cache). Nothing tells the programs when a route or a
 * neighbour changes: for up to that second a flow keeps the egress
 * interface and MAC addresses it had (as a flow keeps a route cached in
 * its socket), then looks them up again. A packet longer than any the
 * route took is looked up again at once (the lookup checks the route's
 * MTU; too big answers fragmentation-needed / packet too big), and so is
 * one whose TTL / hop limit is spent. TC caches only a resolved neighbour
 * (BPF_FIB_LKUP_RET_SUCCESS): until it is resolved every packet is looked
 * up and sent with bpf_redirect_neigh(). */
#define FWD_CACHE_SHIFT 20
#define FWD_CACHE_LIFE	954  /* x 2^20 ns = 1.0003 s */
#define FWD_TC_REDIRECT 0x10 /* TC: bpf_redirect() to ifindex with the MACs */
#define FWD_TC_PEER	0x11 /* TC: a pod's veth: bpf_redirect_peer() */

/* Whether the TC hooks may send a packet of 'len' bytes and TTL / hop
 * limit 'ttl' where the entry's cache says, at 'now'. */
static __always_inline int fwd_tc_fresh(const struct ct_fwd *c, __u16 len, __u8 ttl, __u64 now)
{
	__u32 stamp = (__u32)(now >> FWD_CACHE_SHIFT);

	return cfg_fib_redirect && !cfg_trace && c->ifindex && c->where >= FWD_TC_REDIRECT &&
	       (__u32)(stamp - c->stamp) < FWD_CACHE_LIFE && len <= c->max_len && ttl > 1;
}

/* Remember a TC lookup's result (rc BPF_FIB_LKUP_RET_SUCCESS) for the
 * flow's next packets. */
static __always_inline void fwd_tc_fill(struct ct_fwd *c, __u16 len,
					const struct bpf_fib_lookup *fib, __u8 where)
{
	__u32 stamp;
	int   fresh;

	if (cfg_trace) /* lib/trace.h: no map writes */
		return;
	stamp = (__u32)(bpf_ktime_get_ns() >> FWD_CACHE_SHIFT);
	fresh = c->ifindex && c->where == where && (__u32)(stamp - c->stamp) < FWD_CACHE_LIFE;
	/* the same route taking a longer packet: the longest so far */
	c->max_len   = fresh && c->ifindex == fib->ifindex && c->max_len > len ? c->max_len : len;
	c->where     = where;
	c->ttl_check = 1;
	__builtin_memcpy(c->dmac, fib->dmac, ETH_ALEN);
	__builtin_memcpy(c->smac, fib->smac, ETH_ALEN);
	c->stamp = stamp;
	asm volatile("" ::: "memory");
	c->ifindex = fib->ifindex;
}

/* After the rewrite: send the packet where fib_route said, as a router
 * would (TTL decremented), or leave it to the stack: when the FIB cannot
 * place it, and when its TTL is spent (0 or 1: the stack answers time
 * exceeded). With 'c' (a conntrack entry's cache): a resolved route is
 * remembered there for 'len' bytes. */
static __always_inline int fib_redirect_fill(struct __sk_buff *skb, const struct pkt *p,
					     const struct bpf_fib_lookup *fib, int rc,
					     struct ct_fwd *c, __u16 len)
{
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;
	if (p->ttl <= 1) {
		count_reason(skb, REASON_TTL);
		return TC_ACT_OK;
	}
	if (ttl_decrement(skb, p))
		return drop(skb, REASON_REWRITE_FAILED);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0))
		return drop(skb, REASON_REWRITE_FAILED);
	{
		struct pod_if_key pk = {.ifindex = fib->ifindex};

		if (bpf_map_lookup_elem(&bpfproxy_pod_ifs, &pk)) {
			if (c)
				fwd_tc_fill(c, len, fib, FWD_TC_PEER);
			return bpf_redirect_peer(fib->ifindex, 0);
		}
	}
	if (c)
		fwd_tc_fill(c, len, fib, FWD_TC_REDIRECT);
	return bpf_redirect(fib->ifindex, 0);
}

static __always_inline int fib_redirect(struct __sk_buff *skb, const struct pkt *p,
					const struct bpf_fib_lookup *fib, int rc)
{
	return fib_redirect_fill(skb, p, fib, rc, NULL, 0);
}

/* An established flow's translated packet sent where the entry's cache
 * says (fwd_tc_fresh()): as fib_redirect_fill() would with the lookup that
 * filled it, after the caller's rewrite. */
static __always_inline int fib_redirect_cached(struct __sk_buff *skb, const struct pkt *p,
					       const struct ct_fwd *c)
{
	__u32 ifindex = c->ifindex;
	__u8  where   = c->where;
	__u8  mac[2 * ETH_ALEN];

	__builtin_memcpy(mac, c->dmac, ETH_ALEN);
	__builtin_memcpy(mac + ETH_ALEN, c->smac, ETH_ALEN);
	if (ttl_decrement(skb, p) || bpf_skb_store_bytes(skb, 0, mac, sizeof(mac), 0))
		return drop(skb, REASON_REWRITE_FAILED);
	return where == FWD_TC_PEER ? bpf_redirect_peer(ifindex, 0) : bpf_redirect(ifindex, 0);
}

/* The address the node would use as source towards daddr (ctx: the TC or
 * XDP context, ifindex: the interface the packet came in on). The MTU is not
 * this lookup's business (translate() checks it with the packet's real
 * length), so it asks with a bare header's length: with 0 the kernel would
 * check the skb's length and fail a large first packet.
 *
 * Kernels before 6.7 refuse BPF_FIB_LOOKUP_SRC (and before 6.3
 * BPF_FIB_LOOKUP_SKIP_NEIGH) with an error (< 0), unless a stable update
 * brought them in: there the source is the node's own address the client
 * addressed (NodePort), a node address that routes back here as well as
 * any; with no such address (a LoadBalancer IP or external IP) there is no
 * source, and the caller drops the packet (counted as no-snat-source)
 * unless cfg_snat_ip names one (bpf/KERNEL_REQUIREMENTS.md). */
static __always_inline __be32 fib_source_for(void *ctx, __u32 ifindex, __be32 daddr,
					     __be32 addressed)
{
	struct bpf_fib_lookup fib = {};
	struct node_ip_key    nk  = {.addr = addressed};
	long		      rc;

	if (cfg_snat_ip)
		return cfg_snat_ip;
	fib.family   = AF_INET;
	fib.tot_len  = sizeof(struct iphdr);
	fib.ipv4_dst = daddr;
	fib.ifindex  = ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS)
		return fib.ipv4_src;
	if (rc < 0 && bpf_map_lookup_elem(&bpfproxy_node_ips, &nk))
		return addressed;
	return 0;
}

#endif /* BPFPROXY_FIB_H */
