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
#include "types6.h"

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

/* The IPv6 twin, from the IPv6 routes that point at each pod veth. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct pod_src6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_pod_srcs6 SEC(".maps");

/* As pod_source_ok(), IPv6. Link-local (fe80::/10) and the unspecified
 * address (duplicate address detection) are always the pod's own; the
 * rest as IPv4: no entry for the interface passes, the catch-all (value
 * 0) drops. A frame of its own: the key stays off the callers' stack. */
static __noinline int pod6_source_ok(__u32 ifindex, const union v6addr *saddr)
{
	struct pod_src6_key k = {
		.prefixlen = 32 + 128,
		.ifindex   = bpf_htonl(ifindex),
	};
	__u8 *v;

	if ((saddr->w[0] & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000))
		return 1;
	if ((saddr->w[0] | saddr->w[1] | saddr->w[2] | saddr->w[3]) == 0)
		return 1;
	k.addr = *saddr;
	v      = bpf_map_lookup_elem(&bpfproxy_pod_srcs6, &k);
	return !v || *v;
}

/* Pod interface -> the pod's IPv4 address (lib/policy6.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pod_if_key);
	__type(value, struct pod_addr);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_pod_addrs SEC(".maps");

#endif /* BPFPROXY_POD_H */
