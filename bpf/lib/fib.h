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
#include "nat.h"

static __always_inline int fib_forward(struct __sk_buff *skb, struct pkt *p)
{
	struct bpf_fib_lookup fib = {};
	int rc, ttl;

	if (!cfg_fib_redirect)
		return TC_ACT_OK;

	fib.family = AF_INET;
	fib.l4_protocol = p->tuple.proto;
	fib.sport = p->tuple.sport;
	fib.dport = p->tuple.dport;
	fib.tot_len = 0; /* let the kernel check the skb against the MTU */
	fib.ipv4_src = p->tuple.saddr;
	fib.ipv4_dst = p->tuple.daddr;
	fib.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;

	ttl = ttl_decrement(skb, p);
	if (ttl < 0)
		return drop(skb, REASON_REWRITE_FAILED);
	if (ttl <= 1) {
		count_reason(skb, REASON_TTL);
		return TC_ACT_OK;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
		return drop(skb, REASON_REWRITE_FAILED);
	return bpf_redirect(fib.ifindex, 0);
}

/* The address the node would use as source towards daddr. */
static __always_inline __be32 fib_source_for(struct __sk_buff *skb, __be32 daddr)
{
	struct bpf_fib_lookup fib = {};

	if (cfg_snat_ip)
		return cfg_snat_ip;
	fib.family = AF_INET;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ingress_ifindex;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	return fib.ipv4_src;
}

#endif /* BPFPROXY_FIB_H */
