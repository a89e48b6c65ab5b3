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
	/* The length the next hop must carry, checked against the route's MTU
	 * (a route 'mtu' included): one segment for GSO packets. */
	fib->tot_len  = skb->gso_size ? p->ihl_bytes + p->l4_hdr_len + skb->gso_size : p->tot_len;
	fib->ipv4_src = to->saddr;
	fib->ipv4_dst = to->daddr;
	fib->ifindex  = skb->ingress_ifindex;
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

/* After the rewrite: send the packet where fib_route said, as a router
 * would (TTL decremented), or leave it to the stack: when the FIB cannot
 * place it, and when its TTL is spent (0 or 1: the stack answers time
 * exceeded). */
static __always_inline int fib_redirect(struct __sk_buff *skb, const struct pkt *p,
					const struct bpf_fib_lookup *fib, int rc)
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

		if (bpf_map_lookup_elem(&bpfproxy_pod_ifs, &pk))
			return bpf_redirect_peer(fib->ifindex, 0);
	}
	return bpf_redirect(fib->ifindex, 0);
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
