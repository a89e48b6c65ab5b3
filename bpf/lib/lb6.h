/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 service load balancing: the IPv6 twins of lib/lb.h's maps and
 * lookups (frontends, backend slots, ClientIP affinity, the node's own
 * addresses, loadBalancerSourceRanges). Backend set ids and service ids are
 * shared with IPv4 (one allocator in the agent), so a set lives in exactly
 * one of bpfproxy_slots / bpfproxy_slots6. Maglev tables are shared too
 * (they hold ordinals, not addresses); the flow hash folds the IPv6
 * addresses to 32 bits.
 */
#ifndef BPFPROXY_LB6_H
#define BPFPROXY_LB6_H

#include "common.h"
#include "drop.h"
#include "maglev.h"
#include "parse6.h"
#include "types6.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* agent: bpfMapSizeNATFrontend */
	__type(key, struct fe6_key);
	__type(value, struct fe_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_fe6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* agent: bpfMapSizeNATBackend */
	__type(key, struct slot_key);
	__type(value, struct backend6);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_slots6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* agent: bpfMapSizeNATAffinity */
	__type(key, struct affinity6_key);
	__type(value, struct affinity6_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_affinity6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct node_ip6_key);
	__type(value, __u8); /* enum node_ip_flags */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_node_ips6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct lb_src6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_lb_srcs6 SEC(".maps");

static __always_inline __u8 *node_ip6_flags(const union v6addr *a)
{
	struct node_ip6_key nk = {.addr = *a};

	return bpf_map_lookup_elem(&bpfproxy_node_ips6, &nk);
}

/* As lb_lookup(): exact (address, port, proto), then the NodePort wildcard
 * when the address is one of the node's that NodePort answers on. */
static __always_inline struct fe_value *lb6_lookup(const struct ct6_key *t)
{
	struct fe6_key	 k = {.addr = t->daddr, .port = t->dport, .proto = t->proto};
	struct fe_value *fe;
	__u8		*nf;

	fe = bpf_map_lookup_elem(&bpfproxy_fe6, &k);
	if (fe)
		return fe;
	nf = node_ip6_flags(&t->daddr);
	if (!nf || !(*nf & NODE_IP_F_NODEPORT))
		return NULL;
	__builtin_memset(&k.addr, 0, sizeof(k.addr));
	return bpf_map_lookup_elem(&bpfproxy_fe6, &k);
}

static __always_inline int lb6_source_allowed(const struct fe_value *fe, const union v6addr *saddr)
{
	struct lb_src6_key k = {
		.prefixlen = 32 + 128,
		.svc_id	   = bpf_htonl(fe->svc_id),
		.addr	   = *saddr,
	};

	if (!(fe->flags & FE_F_SRC_RANGE))
		return 1;
	return bpf_map_lookup_elem(&bpfproxy_lb_srcs6, &k) != NULL;
}

/* As lb_select(), for IPv6. */
static __always_inline enum reason lb6_select(const struct fe_value *fe, int local_only,
					      const struct ct6_key *t, __u64 now,
					      struct backend6 *out)
{
	struct affinity6_key	ak = {.svc_id = fe->svc_id, .client = t->saddr};
	struct affinity6_value *av;
	struct slot_key		sk;
	struct backend6	       *be;
	__u32			start = local_only ? fe->cluster_count : 0;
	__u32			n     = local_only ? fe->local_count : fe->cluster_count;
	__u32			ord;

	if (n == 0)
		return (fe->cluster_count == 0 && fe->local_count == 0) ? REASON_NO_ENDPOINTS
									: REASON_NO_LOCAL_ENDPOINTS;
	if (fe->affinity_timeout) {
		av = bpf_map_lookup_elem(&bpfproxy_affinity6, &ak);
		if (av && now - av->last_used_ns < (__u64)fe->affinity_timeout * NSEC_PER_SEC &&
		    (!local_only || (av->backend.flags & BE_F_LOCAL))) {
			if (!cfg_trace)
				av->last_used_ns = now;
			*out = av->backend;
			return REASON_NONE;
		}
	}
	if (fe->flags & FE_F_MAGLEV) {
		/* The shared tables' flow hash over the addresses folded to 32
		 * bits: every node folds alike, so every node picks alike. */
		struct ct_key h = {
			.saddr = t->saddr.w[0] ^ t->saddr.w[1] ^ t->saddr.w[2] ^ t->saddr.w[3],
			.daddr = t->daddr.w[0] ^ t->daddr.w[1] ^ t->daddr.w[2] ^ t->daddr.w[3],
			.sport = t->sport,
			.dport = t->dport,
			.proto = t->proto,
		};

		if (maglev_pick(fe, local_only, n, &h, &ord))
			return REASON_BACKEND_MISSING;
	} else {
		ord = bpf_get_prandom_u32() % n;
	}
	sk.set_id = fe->set_id;
	sk.index  = start + ord;
	be	  = bpf_map_lookup_elem(&bpfproxy_slots6, &sk);
	if (!be)
		return REASON_BACKEND_MISSING;
	*out = *be;
	if (fe->affinity_timeout && !cfg_trace) {
		struct affinity6_value nv = {.backend = *be, .last_used_ns = now};

		bpf_map_update_elem(&bpfproxy_affinity6, &ak, &nv, BPF_ANY);
	}
	return REASON_NONE;
}

#endif /* BPFPROXY_LB6_H */
