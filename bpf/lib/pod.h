/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Pod source check: a packet from a pod interface must come from an address
 * routed to that interface (the agent writes the routes that point at each
 * pod veth, see struct pod_src_key). A pod that forges its source is
 * dropped here, before any service translation could carry the forged
 * address past the kernel's reverse-path filter.
 */
#ifndef BPFPROXY_POD_H
#define BPFPROXY_POD_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct pod_src_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_pod_srcs SEC(".maps");

/* 1 when saddr may be sent from this interface (or the interface is not
 * checked), 0 when it is forged. One trie lookup. */
static __always_inline int pod_source_ok(__u32 ifindex, __be32 saddr)
{
	struct pod_src_key k = {
		.prefixlen = 64,
		.ifindex   = bpf_htonl(ifindex),
		.addr	   = saddr,
	};
	__u8 *v = bpf_map_lookup_elem(&bpfproxy_pod_srcs, &k);

	return !v || *v;
}

#endif /* BPFPROXY_POD_H */
