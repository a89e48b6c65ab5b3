/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maglev consistent hashing: a new flow to a frontend with FE_F_MAGLEV
 * takes the backend its 5-tuple hashes to in the backend set's lookup
 * table, so that every node picks the same backend for the same flow (the
 * agent builds the same tables everywhere: src/model/maglev.ts) and a flow
 * keeps it when its packets move to another ingress node or lose their
 * conntrack entry. The tables live in one hash map, chunked (struct
 * maglev_key / maglev_chunk in types.h); the agent writes a set's tables
 * before any frontend points at the set and deletes them after.
 *
 * maglev_pick() has no side effects and reads nothing but the frontend and
 * the tuple: the conntrack-miss path for a packet that does not open a flow
 * (a flow arriving from another ingress node) can call it as it is to find
 * the backend the flow's first node chose.
 */
#ifndef BPFPROXY_MAGLEV_H
#define BPFPROXY_MAGLEV_H

#include "common.h"
#include "config.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072); /* agent: DatapathConfig mapSizes.maglev */
	__type(key, struct maglev_key);
	__type(value, struct maglev_chunk);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_maglev SEC(".maps");

/* Hide a value from the compiler's range reasoning (as libbpf's
 * bpf_helpers.h barrier_var()). */
#ifndef barrier_var
#define barrier_var(var) asm volatile("" : "+r"(var))
#endif

/* The kernel's jhash (include/linux/jhash.h, lookup3). */
#define MAGLEV_JHASH_INITVAL 0xdeadbeef
#define maglev_rol32(x, k)   (((x) << (k)) | ((x) >> (32 - (k))))

/* jhash2() over four words in host order: saddr, daddr,
 * sport << 16 | dport, proto; initval = cfg_maglev_seed. The byte swaps make
 * it the same on hosts of either byte order (maglevFlowHash() in the
 * agent). */
static __always_inline __u32 maglev_flow_hash(const struct ct_key *t)
{
	__u32 a, b, c;

	a = b = c = MAGLEV_JHASH_INITVAL + (4 << 2) + cfg_maglev_seed;
	a += bpf_ntohl(t->saddr);
	b += bpf_ntohl(t->daddr);
	c += ((__u32)bpf_ntohs(t->sport) << 16) | bpf_ntohs(t->dport);
	/* __jhash_mix */
	a -= c;
	a ^= maglev_rol32(c, 4);
	c += b;
	b -= a;
	b ^= maglev_rol32(a, 6);
	a += c;
	c -= b;
	c ^= maglev_rol32(b, 8);
	b += a;
	a -= c;
	a ^= maglev_rol32(c, 16);
	c += b;
	b -= a;
	b ^= maglev_rol32(a, 19);
	a += c;
	c -= b;
	c ^= maglev_rol32(b, 4);
	b += a;
	/* the fourth word, then __jhash_final */
	a += t->proto;
	c ^= b;
	c -= maglev_rol32(b, 14);
	a ^= c;
	a -= maglev_rol32(c, 11);
	b ^= a;
	b -= maglev_rol32(a, 25);
	c ^= b;
	c -= maglev_rol32(b, 16);
	a ^= c;
	a -= maglev_rol32(c, 4);
	b ^= a;
	b -= maglev_rol32(a, 14);
	c ^= b;
	c -= maglev_rol32(b, 24);
	return c;
}

/* The ordinal in its set (0 .. n-1) of the backend the table of 'fe's
 * cluster-wide (local = 0) or node-local (local = 1) set gives this flow.
 * Returns -1 when the table or the entry is missing or out of range (the
 * agent writes tables before the frontend points at them: not expected). */
static __always_inline int maglev_pick(const struct fe_value *fe, int local, __u32 n,
				       const struct ct_key *t, __u32 *ord)
{
	struct maglev_key    k = {.set_id = fe->set_id,
				  .table  = local ? MAGLEV_T_LOCAL : MAGLEV_T_CLUSTER};
	struct maglev_chunk *c;
	__u32		     size = local ? fe->maglev_size_local : fe->maglev_size;
	__u32		     m, idx, off, o;

	if (size == 0 || size >= MAGLEV_SIZES || n == 0)
		return -1;
	m = cfg_maglev_sizes[size];
	if (m == 0)
		return -1;
	idx = maglev_flow_hash(t) % m;
	if (n <= 256) {
		/* one byte an entry */
		k.chunk = idx / MAGLEV_CHUNK_BYTES;
		off	= idx % MAGLEV_CHUNK_BYTES;
		c	= bpf_map_lookup_elem(&bpfproxy_maglev, &k);
		/* the compiler knows off < MAGLEV_CHUNK_BYTES, the verifier does
		 * not: check it on a register the compiler cannot reason about */
		barrier_var(off);
		if (!c || off >= MAGLEV_CHUNK_BYTES)
			return -1;
		o = c->ord[off];
	} else {
		/* two bytes an entry, little-endian */
		k.chunk = idx / (MAGLEV_CHUNK_BYTES / 2);
		off	= (idx % (MAGLEV_CHUNK_BYTES / 2)) * 2;
		c	= bpf_map_lookup_elem(&bpfproxy_maglev, &k);
		barrier_var(off);
		if (!c || off >= MAGLEV_CHUNK_BYTES - 1)
			return -1;
		o = c->ord[off] | ((__u32)c->ord[off + 1] << 8);
	}
	if (o >= n)
		return -1;
	*ord = o;
	return 0;
}

#endif /* BPFPROXY_MAGLEV_H */
