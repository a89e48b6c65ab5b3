/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The AF_XDP vector engine: a second dataplane for bpfproxy, VPP-style.
 *
 * A worker takes up to `vector` frames at once (from AF_XDP RX rings, or
 * from a test/benchmark caller) and runs the whole vector through each node
 * of a fixed graph before the next node:
 *
 *   ip4-parse -> session -> lb -> nat -> l2-rewrite -> output
 *       |           |  \     |--> reject ------|---------^
 *       |           |   '-> policy -> nat    (while an endpoint is isolated)
 *       |           '--------'--> drop (counted per reason)
 *       '--> icmp-error (errors about a flow) --'
 *
 * Per-packet state lives in struct-of-arrays (struct eng_vec); a node reads
 * the indices queued for it, processes them with prefetches a few packets
 * ahead, and queues each index for its next node.
 *
 * What the engine serves comes from one immutable table (struct eng_table,
 * built from a binary blob the agent encodes: table.c) swapped RCU-style:
 * workers load the table pointer once per vector and announce a quiescent
 * point after each one; an old table is freed once every worker has passed
 * one. Sessions live in an engine-owned open-addressing table (session.c)
 * shared by all workers: lock-free lookups (a per-slot sequence count),
 * inserts and deletions under one lock.
 *
 * Byte order: addresses and ports are kept as on the wire (network order)
 * everywhere in the data path; table.c converts the blob's fields.
 */
#ifndef BPFPROXY_ENGINE_H
#define BPFPROXY_ENGINE_H

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "api.h"

/* ---- conntrack-compatible flags and states (bpf/lib/types.h) ------------ */

#define ENG_CT_DIR_FWD	     1
#define ENG_CT_DIR_REPLY     2
#define ENG_DIR_AFFINITY     3

#define ENG_CT_S_REPLY_SEEN  0x01
#define ENG_CT_S_FIN_FWD     0x02
#define ENG_CT_S_FIN_REPLY   0x04
#define ENG_CT_S_RST	     0x08
#define ENG_CT_S_ESTABLISHED 0x10

#define ENG_CT_F_SNAT	     0x01
#define ENG_CT_F_HAIRPIN     0x02
#define ENG_CT_F_EXTERNAL    0x04

#define ENG_FE_F_EXTERNAL    0x01
#define ENG_FE_F_EXT_LOCAL   0x02
#define ENG_FE_F_INT_LOCAL   0x04
#define ENG_FE_F_NODEPORT    0x08
#define ENG_FE_F_MAGLEV	     0x10 /* new flows pick by the Maglev table, not at random */

#define ENG_BE_F_LOCAL	     0x01

#define ENG_PORT_F_POD	     0x01 /* pod-facing: traffic from it is internal */

/* ---- the table (table.c) ----------------------------------------------- */

/* An IPv6 address as on the wire, read as four 32-bit words. */
typedef struct {
	uint32_t w[4];
} eng_ip6;

static inline int eng_ip6_eq(const eng_ip6 *a, const eng_ip6 *b)
{
	return ((a->w[0] ^ b->w[0]) | (a->w[1] ^ b->w[1]) | (a->w[2] ^ b->w[2]) |
		(a->w[3] ^ b->w[3])) == 0;
}

static inline int eng_ip6_zero(const eng_ip6 *a)
{
	return (a->w[0] | a->w[1] | a->w[2] | a->w[3]) == 0;
}

struct eng_port {
	uint32_t ifindex;
	uint32_t flags;
	uint8_t	 mac[6];
	char	 name[17];
};

struct eng_frontend {
	uint32_t addr; /* net; 0 = NodePort (any node address) */
	uint16_t port; /* net */
	uint8_t	 proto;
	uint8_t	 flags;
	uint32_t svc_id;
	uint32_t affinity_s;
	uint32_t be_start; /* into eng_table.backends */
	uint16_t cluster_count;
	uint16_t local_count;
	/* ENG_FE_F_MAGLEV: the cluster-wide set's table (maglev_m entries) at
	 * eng_table.maglev[maglev_start], the node-local set's
	 * (maglev_m_local) right after it; entries are ordinals in the set */
	uint32_t maglev_start;
	uint16_t maglev_m, maglev_m_local;
};

struct eng_backend {
	uint32_t addr; /* net */
	uint16_t port; /* net */
	uint8_t	 flags;
	uint8_t	 pad;
};

/* The next hop of a backend address: where frames to it leave, and the
 * node address SNAT uses towards it. */
struct eng_neigh {
	uint32_t addr; /* net: the backend address */
	uint32_t snat; /* net: 0 = none */
	uint8_t	 port; /* index into eng_table.ports */
	uint8_t	 mac[6];
};

/* IPv6: the same records with 128-bit addresses (the frontend's own
 * fields in f, f.addr unused). */
struct eng_frontend6 {
	eng_ip6		    addr; /* :: = NodePort (any node IPv6 address) */
	struct eng_frontend f;
};

struct eng_backend6 {
	eng_ip6	 addr;
	uint16_t port; /* net */
	uint8_t	 flags;
	uint8_t	 pad;
};

struct eng_neigh6 {
	eng_ip6 addr;
	eng_ip6 snat; /* :: = none */
	uint8_t port;
	uint8_t mac[6];
};

struct eng_table {
	uint32_t generation;
	uint16_t snat_min, snat_max; /* host order */
	uint32_t hairpin;	     /* net */
	uint64_t ct_syn_ns, ct_est_ns, ct_fin_ns, ct_rst_ns, ct_udp_ns;

	uint32_t	nports;
	struct eng_port ports[ENG_MAX_PORTS];

	uint32_t  naddrs; /* node addresses, sorted (net order compared as u32) */
	uint32_t *addrs;

	uint32_t	     nfe;
	struct eng_frontend *fes;
	uint32_t	     fe_mask; /* hash of frontend indices + 1 */
	uint32_t	    *fe_hash;

	uint32_t	    nbe;
	struct eng_backend *bes;

	uint32_t	  nneigh;
	struct eng_neigh *neigh;
	uint32_t	  neigh_mask;
	uint32_t	 *neigh_hash;

	uint32_t  nmaglev; /* Maglev table entries, all frontends' */
	uint16_t *maglev;
	uint32_t  maglev_seed;

	/* IPv6 (version 3 blobs): node addresses sorted (memcmp), the rest
	 * as the IPv4 ones; the Maglev entries are the shared array's */
	eng_ip6		      hairpin6; /* :: = none: hairpin flows dropped */
	uint32_t	      naddrs6;
	eng_ip6		     *addrs6;
	uint32_t	      nfe6;
	struct eng_frontend6 *fes6;
	uint32_t	      fe6_mask;
	uint32_t	     *fe6_hash;
	uint32_t	      nbe6;
	struct eng_backend6  *bes6;
	uint32_t	      nneigh6;
	struct eng_neigh6    *neigh6;
	uint32_t	      neigh6_mask;
	uint32_t	     *neigh6_hash;

	size_t bytes; /* memory held, for stats */
};

/* Lookups in the table, inlined where they are used. */
static inline uint32_t eng_mix32(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return (uint32_t)x;
}

static inline uint32_t eng_fe_hash(uint32_t addr, uint16_t port, uint8_t proto)
{
	return eng_mix32(((uint64_t)addr << 32) | ((uint64_t)port << 8) | proto);
}

static inline const struct eng_frontend *
eng_fe_lookup_exact(const struct eng_table *t, uint32_t addr, uint16_t port, uint8_t proto)
{
	uint32_t h = eng_fe_hash(addr, port, proto) & t->fe_mask;

	for (uint32_t i = 0; i <= t->fe_mask; i++) {
		uint32_t		   v = t->fe_hash[(h + i) & t->fe_mask];
		const struct eng_frontend *f;

		if (!v)
			return NULL;
		f = &t->fes[v - 1];
		if (f->addr == addr && f->port == port && f->proto == proto)
			return f;
	}
	return NULL;
}

/* bpf/lib/maglev.h maglev_flow_hash(): the kernel's jhash2 over four words
 * in host order (saddr, daddr, sport << 16 | dport, proto), initval = the
 * seed, so the engine and the BPF path pick the same entry for a flow. */
#define ENG_ROL32(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
static inline uint32_t eng_maglev_hash(uint32_t seed, uint32_t saddr, uint32_t daddr,
				       uint16_t sport, uint16_t dport, uint8_t proto)
{
	uint32_t a, b, c;

	a = b = c = 0xdeadbeef + (4 << 2) + seed;
	a += ntohl(saddr);
	b += ntohl(daddr);
	c += ((uint32_t)ntohs(sport) << 16) | ntohs(dport);
	a -= c;
	a ^= ENG_ROL32(c, 4);
	c += b;
	b -= a;
	b ^= ENG_ROL32(a, 6);
	a += c;
	c -= b;
	c ^= ENG_ROL32(b, 8);
	b += a;
	a -= c;
	a ^= ENG_ROL32(c, 16);
	c += b;
	b -= a;
	b ^= ENG_ROL32(a, 19);
	a += c;
	c -= b;
	c ^= ENG_ROL32(b, 4);
	b += a;
	a += proto;
	c ^= b;
	c -= ENG_ROL32(b, 14);
	a ^= c;
	a -= ENG_ROL32(c, 11);
	b ^= a;
	b -= ENG_ROL32(a, 25);
	c ^= b;
	c -= ENG_ROL32(b, 16);
	a ^= c;
	a -= ENG_ROL32(c, 4);
	b ^= a;
	b -= ENG_ROL32(a, 14);
	c ^= b;
	c -= ENG_ROL32(b, 24);
	return c;
}

static inline int eng_is_node_addr(const struct eng_table *t, uint32_t addr)
{
	uint32_t lo = 0, hi = t->naddrs;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (t->addrs[mid] == addr)
			return 1;
		if (t->addrs[mid] < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* Exact (address, port, protocol) first, then the NodePort wildcard when
 * the address is one of the node's (bpf/lib/lb.h lb_lookup()). */
static inline const struct eng_frontend *eng_fe_lookup(const struct eng_table *t, uint32_t daddr,
						       uint16_t dport, uint8_t proto)
{
	const struct eng_frontend *f = eng_fe_lookup_exact(t, daddr, dport, proto);

	if (f || !eng_is_node_addr(t, daddr))
		return f;
	return eng_fe_lookup_exact(t, 0, dport, proto);
}

static inline const struct eng_neigh *eng_neigh_lookup(const struct eng_table *t, uint32_t addr)
{
	uint32_t h = eng_mix32(addr) & t->neigh_mask;

	for (uint32_t i = 0; i <= t->neigh_mask; i++) {
		uint32_t v = t->neigh_hash[(h + i) & t->neigh_mask];

		if (!v)
			return NULL;
		if (t->neigh[v - 1].addr == addr)
			return &t->neigh[v - 1];
	}
	return NULL;
}

static inline uint32_t eng_ip6_fold(const eng_ip6 *a)
{
	return a->w[0] ^ a->w[1] ^ a->w[2] ^ a->w[3];
}

static inline uint32_t eng_ip6_mix(const eng_ip6 *a)
{
	return eng_mix32(((uint64_t)(a->w[0] ^ a->w[2]) << 32 | (a->w[1] ^ a->w[3])) ^
			 ((uint64_t)a->w[3] * 0x9e3779b97f4a7c15ULL));
}

static inline uint32_t eng_fe6_hash(const eng_ip6 *addr, uint16_t port, uint8_t proto)
{
	return eng_ip6_mix(addr) ^ eng_mix32(((uint64_t)port << 8) | proto);
}

static inline const struct eng_frontend6 *
eng_fe6_lookup_exact(const struct eng_table *t, const eng_ip6 *addr, uint16_t port, uint8_t proto)
{
	uint32_t h = eng_fe6_hash(addr, port, proto) & t->fe6_mask;

	for (uint32_t i = 0; i <= t->fe6_mask; i++) {
		uint32_t		    v = t->fe6_hash[(h + i) & t->fe6_mask];
		const struct eng_frontend6 *f;

		if (!v)
			return NULL;
		f = &t->fes6[v - 1];
		if (f->f.port == port && f->f.proto == proto && eng_ip6_eq(&f->addr, addr))
			return f;
	}
	return NULL;
}

static inline int eng_is_node_addr6(const struct eng_table *t, const eng_ip6 *addr)
{
	uint32_t lo = 0, hi = t->naddrs6;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		int	 c   = memcmp(&t->addrs6[mid], addr, 16);

		if (!c)
			return 1;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

static inline const struct eng_frontend6 *eng_fe6_lookup(const struct eng_table *t,
							 const eng_ip6 *daddr, uint16_t dport,
							 uint8_t proto)
{
	static const eng_ip6		   any = {{0, 0, 0, 0}};
	const struct eng_frontend6 *f	= eng_fe6_lookup_exact(t, daddr, dport, proto);

	if (f || !eng_is_node_addr6(t, daddr))
		return f;
	return eng_fe6_lookup_exact(t, &any, dport, proto);
}

static inline const struct eng_neigh6 *eng_neigh6_lookup(const struct eng_table *t,
							 const eng_ip6 *addr)
{
	uint32_t h = eng_ip6_mix(addr) & t->neigh6_mask;

	for (uint32_t i = 0; i <= t->neigh6_mask; i++) {
		uint32_t v = t->neigh6_hash[(h + i) & t->neigh6_mask];

		if (!v)
			return NULL;
		if (eng_ip6_eq(&t->neigh6[v - 1].addr, addr))
			return &t->neigh6[v - 1];
	}
	return NULL;
}

/* ---- sessions (session.c) ---------------------------------------------- */

/* One direction of a flow (or a ClientIP affinity record), one cache line.
 * Key and NAT fields are written only under the table lock, inside an odd
 * `seq`; expires/state are refreshed by workers without the lock. */
struct eng_sess {
	_Atomic uint32_t seq;
	uint8_t		 used; /* 0 empty, 1 live, 2 deleted (tombstone) */
	uint8_t		 proto;
	uint8_t		 dir; /* ENG_CT_DIR_*, ENG_DIR_AFFINITY */
	uint8_t		 flags;
	uint32_t	 saddr, daddr;
	uint16_t	 sport, dport;
	uint32_t	 nat_saddr, nat_daddr;
	uint16_t	 nat_sport, nat_dport;
	_Atomic uint64_t expires;
	uint32_t	 export_at_s; /* monotonic s when the conntrack copy needs a refresh */
	uint32_t	 svc_id;
	_Atomic uint8_t	 state;
	uint8_t		 out_port; /* reply: the port the flow came in on; 0xff: neighbour table */
	/* the policy decision (policy.h): the epoch it was taken at, with
	 * ENG_POL_DENIED; 0 = never checked. Both halves carry it. */
	_Atomic uint16_t pol;
	uint8_t		 dmac[6], smac[6];
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct eng_sess) == 64, "one cache line per session entry");

struct eng_key {
	uint32_t saddr, daddr;
	uint16_t sport, dport;
	uint8_t	 proto;
};

/* What a packet needs of its entry, copied out consistently. */
struct eng_view {
	uint32_t slot;
	uint32_t nat_saddr, nat_daddr;
	uint16_t nat_sport, nat_dport;
	uint8_t	 dir, flags, state, out_port;
	uint16_t pol;
	uint8_t	 dmac[6], smac[6];
	uint32_t svc_id;
	uint32_t export_at_s;
	uint64_t expires;
};

/* Longest probe chain a key may have (inserts beyond it: table full). */
#define ENG_PROBE_MAX 128

struct eng_sessions {
	struct eng_sess	  *slots;
	uint32_t	   mask;
	uint32_t	   limit; /* live entries allowed (half the slots) */
	uint64_t	   seed;
	pthread_spinlock_t lock;
	_Atomic uint32_t   live, tombs;
	uint32_t	   gc_cursor;
	int		   huge; /* on reserved huge pages */
	size_t		   bytes;
};

int  eng_sessions_init(struct eng_sessions *s, uint32_t entries);
void eng_sessions_destroy(struct eng_sessions *s);
void eng_sessions_clear(struct eng_sessions *s);
/* The hot path, inlined where it is used: the hash of a key, and the
 * lock-free lookup (the live entry for k or -1, its fields in *v). */
static inline void eng_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ volatile("pause" ::: "memory");
#else
	__asm__ volatile("" ::: "memory");
#endif
}

static inline uint32_t eng_hash(const struct eng_sessions *s, const struct eng_key *k)
{
	uint64_t a = ((uint64_t)k->saddr << 32 | k->daddr) ^ s->seed;
	uint64_t b =
		((uint64_t)k->sport << 32 | (uint64_t)k->dport << 16 | k->proto) ^ (s->seed >> 7);

	a *= 0x9e3779b97f4a7c15ULL;
	b *= 0xc2b2ae3d27d4eb4fULL;
	a ^= b ^ (a >> 29) ^ (b >> 31);
	a *= 0x165667b19e3779f9ULL;
	return (uint32_t)(a >> 32);
}

static inline int eng_key_eq(const struct eng_sess *e, const struct eng_key *k)
{
	return e->saddr == k->saddr && e->daddr == k->daddr && e->sport == k->sport &&
	       e->dport == k->dport && e->proto == k->proto;
}

static inline int64_t eng_sess_lookup(struct eng_sessions *s, uint32_t hash,
				      const struct eng_key *k, struct eng_view *v)
{
	for (uint32_t i = 0; i < ENG_PROBE_MAX; i++) {
		uint32_t	 idx = (hash + i) & s->mask;
		struct eng_sess *e   = &s->slots[idx];
		uint32_t	 q;
		uint8_t		 used;
		int		 match;

	again:
		q = atomic_load_explicit(&e->seq, memory_order_acquire);
		if (q & 1) {
			eng_cpu_relax();
			goto again;
		}
		used  = *(volatile uint8_t *)&e->used;
		match = used == 1 && eng_key_eq(e, k);
		if (match && v) {
			v->slot	       = idx;
			v->nat_saddr   = e->nat_saddr;
			v->nat_daddr   = e->nat_daddr;
			v->nat_sport   = e->nat_sport;
			v->nat_dport   = e->nat_dport;
			v->dir	       = e->dir;
			v->flags       = e->flags;
			v->out_port    = e->out_port;
			v->svc_id      = e->svc_id;
			v->export_at_s = e->export_at_s;
			memcpy(v->dmac, e->dmac, 6);
			memcpy(v->smac, e->smac, 6);
		}
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->seq, memory_order_relaxed) != q)
			goto again;
		if (used == 0)
			return -1;
		if (match) {
			if (v) {
				v->state = atomic_load_explicit(&e->state, memory_order_relaxed);
				v->pol	 = atomic_load_explicit(&e->pol, memory_order_relaxed);
				v->expires =
					atomic_load_explicit(&e->expires, memory_order_relaxed);
			}
			return idx;
		}
	}
	return -1;
}

/* Whether no entry (live at now) holds k. */
int eng_sess_free(struct eng_sessions *s, const struct eng_key *k, uint64_t now);
/* Insert (or replace the expired entry of) k: returns the slot or -1 when
 * full. Called with the lock held. */
int64_t eng_sess_insert_locked(struct eng_sessions *s, const struct eng_key *k,
			       const struct eng_sess *val);
int64_t eng_sess_insert_hashed_locked(struct eng_sessions *s, uint32_t hash,
				      const struct eng_key *k, const struct eng_sess *val);
void	eng_sess_delete_locked(struct eng_sessions *s, uint32_t slot);
/* Expire up to `budget` slots from the GC cursor: both halves of a flow go
 * together once both expired. Returns entries removed. */
uint32_t eng_sessions_gc(struct eng_sessions *s, uint64_t now, uint32_t budget);

/* What lb decided for a new flow between its two passes. */
struct eng_lb {
	uint32_t saddr, daddr; /* the translation (net) */
	uint16_t sport, dport;
	uint32_t svc_id;
	uint32_t rhash; /* hash of the reply key (prefetched) */
	uint8_t	 flags;
	uint16_t pol; /* the policy decision both entries record (policy.h) */
};

/* ---- IPv6 sessions (session6.c) ------------------------------------------ */

/* As struct eng_sess, with 128-bit addresses: two cache lines. The IPv6
 * flows live in a table of their own so that the IPv4 one keeps its one
 * line per entry. */
struct eng_sess6 {
	_Atomic uint32_t seq;
	uint8_t		 used, proto, dir, flags;
	eng_ip6		 saddr, daddr;
	uint16_t	 sport, dport;
	eng_ip6		 nat_saddr, nat_daddr;
	uint16_t	 nat_sport, nat_dport;
	_Atomic uint64_t expires;
	uint32_t	 svc_id;
	_Atomic uint8_t	 state;
	uint8_t		 out_port;
	_Atomic uint16_t pol;
	uint8_t		 dmac[6], smac[6];
	uint32_t	 export_at_s;
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct eng_sess6) == 128, "two cache lines per IPv6 session entry");

struct eng_key6 {
	eng_ip6	 saddr, daddr;
	uint16_t sport, dport;
	uint8_t	 proto;
};

struct eng_view6 {
	uint32_t slot;
	eng_ip6	 nat_saddr, nat_daddr;
	uint16_t nat_sport, nat_dport;
	uint8_t	 dir, flags, state, out_port;
	uint16_t pol;
	uint8_t	 dmac[6], smac[6];
	uint32_t svc_id;
	uint32_t export_at_s;
	uint64_t expires;
};

struct eng_sessions6 {
	struct eng_sess6  *slots;
	uint32_t	   mask;
	uint32_t	   limit;
	uint64_t	   seed;
	pthread_spinlock_t lock;
	_Atomic uint32_t   live, tombs;
	uint32_t	   gc_cursor;
	size_t		   bytes;
};

int	 eng_sessions6_init(struct eng_sessions6 *s, uint32_t entries);
void	 eng_sessions6_destroy(struct eng_sessions6 *s);
void	 eng_sessions6_clear(struct eng_sessions6 *s);
int64_t	 eng_sess6_insert_hashed_locked(struct eng_sessions6 *s, uint32_t hash,
					const struct eng_key6 *k, const struct eng_sess6 *val);
void	 eng_sess6_delete_locked(struct eng_sessions6 *s, uint32_t slot);
uint32_t eng_sessions6_gc(struct eng_sessions6 *s, uint64_t now, uint32_t budget);

static inline uint32_t eng_hash6(const struct eng_sessions6 *s, const struct eng_key6 *k)
{
	uint64_t a = ((uint64_t)(k->saddr.w[0] ^ k->saddr.w[2]) << 32 |
		      (k->saddr.w[1] ^ k->saddr.w[3])) ^
		     s->seed;
	uint64_t b = ((uint64_t)(k->daddr.w[0] ^ k->daddr.w[2]) << 32 |
		      (k->daddr.w[1] ^ k->daddr.w[3])) ^
		     (s->seed >> 7);
	uint64_t c = (uint64_t)k->sport << 32 | (uint64_t)k->dport << 16 | k->proto;

	a = (a ^ ((uint64_t)k->saddr.w[3] << 17)) * 0x9e3779b97f4a7c15ULL;
	b = (b ^ ((uint64_t)k->daddr.w[3] << 13)) * 0xc2b2ae3d27d4eb4fULL;
	c *= 0x165667b19e3779f9ULL;
	a ^= b ^ c ^ (a >> 29) ^ (b >> 31) ^ (c >> 27);
	a *= 0x165667b19e3779f9ULL;
	return (uint32_t)(a >> 32);
}

static inline int eng_key6_eq(const struct eng_sess6 *e, const struct eng_key6 *k)
{
	return e->sport == k->sport && e->dport == k->dport && e->proto == k->proto &&
	       eng_ip6_eq(&e->saddr, &k->saddr) && eng_ip6_eq(&e->daddr, &k->daddr);
}

/* As eng_sess_lookup(). */
static inline int64_t eng_sess6_lookup(struct eng_sessions6 *s, uint32_t hash,
				       const struct eng_key6 *k, struct eng_view6 *v)
{
	for (uint32_t i = 0; i < ENG_PROBE_MAX; i++) {
		uint32_t	  idx = (hash + i) & s->mask;
		struct eng_sess6 *e   = &s->slots[idx];
		uint32_t	  q;
		uint8_t		  used;
		int		  match;

	again:
		q = atomic_load_explicit(&e->seq, memory_order_acquire);
		if (q & 1) {
			eng_cpu_relax();
			goto again;
		}
		used  = *(volatile uint8_t *)&e->used;
		match = used == 1 && eng_key6_eq(e, k);
		if (match && v) {
			v->slot	       = idx;
			v->nat_saddr   = e->nat_saddr;
			v->nat_daddr   = e->nat_daddr;
			v->nat_sport   = e->nat_sport;
			v->nat_dport   = e->nat_dport;
			v->dir	       = e->dir;
			v->flags       = e->flags;
			v->out_port    = e->out_port;
			v->svc_id      = e->svc_id;
			v->export_at_s = e->export_at_s;
			memcpy(v->dmac, e->dmac, 6);
			memcpy(v->smac, e->smac, 6);
		}
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->seq, memory_order_relaxed) != q)
			goto again;
		if (used == 0)
			return -1;
		if (match) {
			if (v) {
				v->state = atomic_load_explicit(&e->state, memory_order_relaxed);
				v->pol	 = atomic_load_explicit(&e->pol, memory_order_relaxed);
				v->expires =
					atomic_load_explicit(&e->expires, memory_order_relaxed);
			}
			return idx;
		}
	}
	return -1;
}

struct eng_lb6 {
	eng_ip6	 saddr, daddr;
	uint16_t sport, dport;
	uint32_t svc_id;
	uint32_t rhash;
	uint8_t	 flags;
	uint16_t pol;
};

/* ---- the vector: struct of arrays -------------------------------------- */

struct eng_vec {
	uint32_t n;
	uint8_t *data[ENG_VEC_MAX];
	uint64_t addr[ENG_VEC_MAX]; /* UMEM address (I/O) or slot (tests) */
	uint16_t len[ENG_VEC_MAX];
	uint16_t cap[ENG_VEC_MAX]; /* bytes writable from data */
	uint8_t	 rx_port[ENG_VEC_MAX];
	uint8_t	 out_port[ENG_VEC_MAX];
	uint8_t	 reason[ENG_VEC_MAX];
	uint8_t	 next[ENG_VEC_MAX]; /* the node a packet went to last (tests) */
	/* parsed tuple */
	uint32_t	saddr[ENG_VEC_MAX], daddr[ENG_VEC_MAX];
	uint16_t	sport[ENG_VEC_MAX], dport[ENG_VEC_MAX];
	uint8_t		proto[ENG_VEC_MAX], tcp_flags[ENG_VEC_MAX], ttl[ENG_VEC_MAX];
	uint16_t	l4_off[ENG_VEC_MAX], ip_len[ENG_VEC_MAX];
	uint16_t	inner_off[ENG_VEC_MAX]; /* ICMP errors: the quoted IPv4 header */
	uint32_t	hash[ENG_VEC_MAX];
	struct eng_view view[ENG_VEC_MAX];
	struct eng_lb	lb[ENG_VEC_MAX];
	int16_t		trace[ENG_VEC_MAX]; /* index into the worker's trace records, -1 */
};

/* The IPv6 packets' own per-packet state (ip6-parse on), allocated apart
 * from struct eng_vec so that the IPv4 nodes' working set stays as it was. */
struct eng_vec6 {
	eng_ip6		 saddr6[ENG_VEC_MAX], daddr6[ENG_VEC_MAX];
	struct eng_view6 view6[ENG_VEC_MAX];
	struct eng_lb6	 lb6[ENG_VEC_MAX];
};

/* ---- a worker ----------------------------------------------------------- */

struct eng;
struct eng_io;

struct eng_ct_export; /* session.c: entries queued for the BPF conntrack */
struct eng_ct6_export;
struct eng_policy;    /* policy.h */

struct eng_worker {
	struct eng *e;
	uint32_t    id;
	/* RCU: odd while inside a vector (or awake), counts passes */
	_Atomic uint64_t      qs;
	_Atomic int	      offline; /* 1 while parked in poll(): not holding a table */
	uint64_t	      rng;
	struct eng_vec	      v;
	struct eng_vec6	     *v6;
	uint16_t	      q[ENG_N__MAX][ENG_VEC_MAX];
	uint32_t	      qn[ENG_N__MAX];
	struct eng_node_stats nodes[ENG_N__MAX];
	uint64_t	      reasons[ENG_R__MAX];
	uint64_t	      ct_exported, ct_export_errors, ct_adopted;
	/* trace records of the current vector */
	struct eng_trace_rec tr[ENG_VEC_MAX];
	uint32_t	     ntr;
	/* output hook: I/O queues the frame for TX, tests collect it */
	void (*output)(struct eng_worker *w, uint32_t i);
	void (*drop)(struct eng_worker *w, uint32_t i);
	void		     *io; /* struct eng_io_worker (xsk.c) or the test context */
	struct eng_ct_export *ctx;
	struct eng_ct6_export *ctx6; /* session6.c: the IPv6 sessions' copies (bpfproxy_ct6) */
	/* the policy of this vector (loaded with the table), and whether
	 * packets must pass the policy node */
	const struct eng_policy *pol;
	int			 pol_on;
	pthread_t		 thread;
	int			 started;
};

/* ---- the engine ---------------------------------------------------------- */

struct eng {
	struct eng_config	    cfg;
	_Atomic(struct eng_table *) table;
	pthread_mutex_t		    table_mu; /* serialises swaps */
	struct eng_sessions	    sessions;
	struct eng_sessions6	    sessions6;
	uint32_t		    nworkers; /* I/O workers, [0, nworkers) */
	struct eng_worker	   *workers[ENG_MAX_WORKERS + 1];
	struct eng_worker	   *test_worker; /* tests and benchmarks, on the caller's thread */
	double			    ns_per_tick;
	uint64_t		    hash_seed;
	/* trace: armed count and collected records */
	_Atomic int32_t	     trace_budget;
	_Atomic uint64_t     trace_seq;
	pthread_mutex_t	     trace_mu;
	struct eng_trace_rec trace[ENG_TRACE_MAX];
	uint32_t	     ntrace;
	/* tables swapped out and not freed yet */
	struct eng_table *retired[8];
	uint64_t	  retired_qs[8][ENG_MAX_WORKERS + 1];
	uint32_t	  nretired;
	uint64_t	  swaps;
	struct eng_io	 *io;
	/* NetworkPolicy (policy.c): swapped like the table, under table_mu */
	_Atomic(struct eng_policy *) policy;
	_Atomic int		     policy_required;
	uint16_t		     pol_epoch; /* the last epoch given (1..ENG_POL_EPOCH_MAX) */
	struct eng_policy	    *pol_retired[8];
	uint64_t		     pol_retired_qs[8][ENG_MAX_WORKERS + 1];
	uint32_t		     npol_retired;
};

/* engine.c: the quiescent-state snapshot of the I/O workers, and whether
 * each has passed a quiescent point since (the RCU of tables and policies). */
void eng_qs_snapshot(struct eng *e, uint64_t *snap);
int  eng_qs_passed(struct eng *e, const uint64_t *snap);
/* policy.c: free what eng_destroy() finds left */
void eng_policy_destroy_all(struct eng *e);

int eng_set_table(struct eng *e, struct eng_table *t);
/* Free retired tables every worker is done with. */
void		   eng_reclaim(struct eng *e);
struct eng_worker *eng_worker_new(struct eng *e, uint32_t id);
void		   eng_worker_free(struct eng_worker *w);

static inline uint64_t eng_ticks(void)
{
#if defined(__x86_64__) || defined(__i386__)
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
#else
	return eng_now_ns();
#endif
}

/* Run the graph over w->v (filled by the caller: data, len, cap, rx_port,
 * addr, n). `until`: stop after this node (tests); ENG_N__MAX runs it all.
 * Packets end in w->output or w->drop. */
void eng_run(struct eng_worker *w, const struct eng_table *t, uint64_t now, enum eng_node until);
/* RCU helpers for worker loops */
static inline const struct eng_table *eng_enter(struct eng_worker *w)
{
	atomic_fetch_add_explicit(&w->qs, 1, memory_order_seq_cst);
	return atomic_load_explicit(&w->e->table, memory_order_seq_cst);
}
static inline void eng_leave(struct eng_worker *w)
{
	atomic_fetch_add_explicit(&w->qs, 1, memory_order_release);
}

/* bpf/lib/conntrack.h ct_lifetime(): how long an entry lives after a packet. */
static inline uint64_t eng_ct_lifetime(const struct eng_table *t, uint8_t proto, uint8_t state)
{
	if (proto != 6)
		return t->ct_udp_ns;
	if (state & ENG_CT_S_RST)
		return t->ct_rst_ns;
	if ((state & (ENG_CT_S_FIN_FWD | ENG_CT_S_FIN_REPLY)) ==
	    (ENG_CT_S_FIN_FWD | ENG_CT_S_FIN_REPLY))
		return t->ct_fin_ns;
	if (state & ENG_CT_S_ESTABLISHED)
		return t->ct_est_ns;
	return t->ct_syn_ns;
}

/* ---- conntrack mirror (session.c) ------------------------------------------ */

/* Queue the BPF conntrack copy of an entry (both directions are queued by
 * their own calls); flushed once per vector with one batch update. */
void eng_ct_queue(struct eng_worker *w, const struct eng_sess *s, uint64_t now);
void eng_ct_flush(struct eng_worker *w);
/* Look the flow up in the BPF conntrack (flows the kernel path opened):
 * 1 and *v filled when found and live. */
int eng_ct_adopt_lookup(struct eng_worker *w, const struct eng_key *k, uint64_t now,
			struct eng_sess *v);
/* The same for IPv6 sessions, into bpfproxy_ct6 (session6.c). */
void   eng_ct6_queue(struct eng_worker *w, const struct eng_sess6 *s, uint64_t now);
int    eng_ct6_adopt_lookup(struct eng_worker *w, const struct eng_key6 *k, uint64_t now,
			    struct eng_sess6 *v);
void   eng_ct6_flush(struct eng_worker *w);
size_t eng_ct6_export_size(void);

#ifdef __cplusplus
}
#endif

#endif /* BPFPROXY_ENGINE_H */
