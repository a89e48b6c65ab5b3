/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * spec.loadBalancerSourceRanges: a LoadBalancer IP frontend flagged
 * FE_F_SRC_RANGE accepts new flows only from the client prefixes the agent
 * wrote under its service port's id (struct lb_src_key). Checked once per
 * new flow, before the backend choice, for every protocol and whichever
 * side the packet came from (kube-proxy drops pods outside the ranges too);
 * established flows never look here again. NodePorts, cluster IPs and
 * external IPs are not subject to it, as with kube-proxy.
 */
#ifndef BPFPROXY_LBSRC_H
#define BPFPROXY_LBSRC_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct lb_src_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_lb_srcs SEC(".maps");

/* 1 when 'saddr' may open a flow to this frontend. One trie lookup, and
 * only for frontends that carry source ranges. */
static __always_inline int lb_source_allowed(const struct fe_value *fe, __be32 saddr)
{
	struct lb_src_key k = {
		.prefixlen = 64,
		.svc_id	   = bpf_htonl(fe->svc_id),
		.addr	   = saddr,
	};

	if (!(fe->flags & FE_F_SRC_RANGE))
		return 1;
	return bpf_map_lookup_elem(&bpfproxy_lb_srcs, &k) != NULL;
}

#endif /* BPFPROXY_LBSRC_H */
