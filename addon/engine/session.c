/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's session table: one open-addressing hash (linear probing,
 * power-of-two slots, one cache line per entry) shared by every worker.
 *
 *  - A flow is two entries, as in the BPF conntrack (bpf/lib/conntrack.h):
 *    the client's tuple (ENG_CT_DIR_FWD) and the backend's reply tuple
 *    (ENG_CT_DIR_REPLY), each carrying its own rewrite. ClientIP affinity
 *    records are entries too (ENG_DIR_AFFINITY, keyed by client and
 *    service id).
 *  - Lookups take no lock: each slot has a sequence count, odd while it is
 *    written; a reader copies what it needs and retries if the count
 *    moved. Inserts and deletions take one spinlock (new flows and GC only).
 *  - Deleted entries leave a tombstone so that probe chains stay whole; a
 *    tombstone followed by an empty slot becomes empty again.
 *  - Bounded: at most half the slots live; a full table refuses new flows
 *    (counted) and keeps every established one.
 *
 * The conntrack mirror: with a BPF conntrack map fd, each worker queues the
 * BPF copy of the entries it creates or changes and writes them in one
 * BPF_MAP_UPDATE_BATCH per vector, so the kernel path (TC programs) carries
 * the engine's flows on when the engine stops, and the XDP program knows
 * which replies are the engine's.
 */
#include <errno.h>
#include <linux/types.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include <bpf/bpf.h>

#include "../../bpf/lib/types.h"
#include "engine.h"

#define ENG_PROBE_MAX 128
#define EXPORT_MAX    (2 * ENG_VEC_MAX)

int eng_sessions_init(struct eng_sessions *s, uint32_t entries)
{
	uint64_t slots = 16;
	size_t	 huge;
	void	*m;

	memset(s, 0, sizeof(*s));
	if (entries < 8)
		entries = 8;
	while (slots < (uint64_t)entries * 2)
		slots <<= 1;
	if (slots > (1ULL << 30))
		return -E2BIG;
	s->bytes = slots * sizeof(struct eng_sess);
	/* Committed up front (bounded, as configured): no page fault on the
	 * path of a new flow. Huge pages where there are some: reserved ones
	 * (hugetlbfs, as for DPDK/VPP), else transparent ones if the kernel
	 * gives them: one TLB entry per 2 MiB of sessions instead of 4 KiB. */
	huge = (s->bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
	m = mmap(NULL, huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1,
		 0);
	if (m != MAP_FAILED) {
		s->bytes = huge;
		s->huge	 = 1;
	} else {
		m = mmap(NULL, s->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
			 0);
		if (m == MAP_FAILED)
			return -errno;
		madvise(m, s->bytes, MADV_HUGEPAGE);
	}
	memset(m, 0, s->bytes);
	s->slots = m;
	s->mask	 = (uint32_t)(slots - 1);
	s->limit = entries;
	if (getrandom(&s->seed, sizeof(s->seed), 0) != sizeof(s->seed))
		s->seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)m;
	pthread_spin_init(&s->lock, PTHREAD_PROCESS_PRIVATE);
	return 0;
}

void eng_sessions_destroy(struct eng_sessions *s)
{
	if (s->slots)
		munmap(s->slots, s->bytes);
	s->slots = NULL;
	pthread_spin_destroy(&s->lock);
}

void eng_sessions_clear(struct eng_sessions *s)
{
	pthread_spin_lock(&s->lock);
	memset(s->slots, 0, s->bytes);
	atomic_store(&s->live, 0);
	atomic_store(&s->tombs, 0);
	s->gc_cursor = 0;
	pthread_spin_unlock(&s->lock);
}

int eng_sess_free(struct eng_sessions *s, const struct eng_key *k, uint64_t now)
{
	struct eng_view v;

	if (eng_sess_lookup(s, eng_hash(s, k), k, &v) < 0)
		return 1;
	return v.expires < now;
}

static void slot_write_begin(struct eng_sess *e)
{
	atomic_store_explicit(&e->seq, atomic_load_explicit(&e->seq, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static void slot_write_end(struct eng_sess *e)
{
	atomic_store_explicit(&e->seq, atomic_load_explicit(&e->seq, memory_order_relaxed) + 1,
			      memory_order_release);
}

int64_t eng_sess_insert_locked(struct eng_sessions *s, const struct eng_key *k,
			       const struct eng_sess *val)
{
	return eng_sess_insert_hashed_locked(s, eng_hash(s, k), k, val);
}

int64_t eng_sess_insert_hashed_locked(struct eng_sessions *s, uint32_t h, const struct eng_key *k,
				      const struct eng_sess *val)
{
	int64_t target = -1, first_free = -1;
	uint8_t was;

	for (uint32_t i = 0; i < ENG_PROBE_MAX; i++) {
		uint32_t	 idx = (h + i) & s->mask;
		struct eng_sess *e   = &s->slots[idx];

		if (e->used == 0) {
			if (first_free < 0)
				first_free = idx;
			break;
		}
		if (e->used == 2) {
			if (first_free < 0)
				first_free = idx;
			continue;
		}
		if (eng_key_eq(e, k)) {
			target = idx;
			break;
		}
	}
	if (target < 0) {
		if (first_free < 0 ||
		    atomic_load_explicit(&s->live, memory_order_relaxed) >= s->limit)
			return -1;
		target = first_free;
	}
	{
		struct eng_sess *e = &s->slots[target];

		was = e->used;
		slot_write_begin(e);
		e->used	       = 1;
		e->proto       = k->proto;
		e->dir	       = val->dir;
		e->flags       = val->flags;
		e->saddr       = k->saddr;
		e->daddr       = k->daddr;
		e->sport       = k->sport;
		e->dport       = k->dport;
		e->nat_saddr   = val->nat_saddr;
		e->nat_daddr   = val->nat_daddr;
		e->nat_sport   = val->nat_sport;
		e->nat_dport   = val->nat_dport;
		e->export_at_s = val->export_at_s;
		e->svc_id      = val->svc_id;
		e->out_port    = val->out_port;
		memcpy(e->dmac, val->dmac, 6);
		memcpy(e->smac, val->smac, 6);
		atomic_store_explicit(&e->expires, atomic_load(&val->expires),
				      memory_order_relaxed);
		atomic_store_explicit(&e->state, atomic_load(&val->state), memory_order_relaxed);
		atomic_store_explicit(&e->pol, atomic_load(&val->pol), memory_order_relaxed);
		slot_write_end(e);
	}
	if (was != 1)
		atomic_fetch_add_explicit(&s->live, 1, memory_order_relaxed);
	if (was == 2)
		atomic_fetch_sub_explicit(&s->tombs, 1, memory_order_relaxed);
	return target;
}

void eng_sess_delete_locked(struct eng_sessions *s, uint32_t slot)
{
	struct eng_sess *e = &s->slots[slot & s->mask];
	uint32_t	 i;

	if (e->used != 1)
		return;
	slot_write_begin(e);
	e->used = 2;
	slot_write_end(e);
	atomic_fetch_sub_explicit(&s->live, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->tombs, 1, memory_order_relaxed);
	/* A tombstone before an empty slot ends no chain that goes further:
	 * it and the tombstones before it can be empty again. */
	if (s->slots[(slot + 1) & s->mask].used != 0)
		return;
	for (i = slot;; i = (i - 1) & s->mask) {
		struct eng_sess *t = &s->slots[i & s->mask];

		if (t->used != 2)
			break;
		slot_write_begin(t);
		t->used = 0;
		slot_write_end(t);
		atomic_fetch_sub_explicit(&s->tombs, 1, memory_order_relaxed);
		if (((i - 1) & s->mask) == slot)
			break;
	}
}

static int64_t find_locked(struct eng_sessions *s, const struct eng_key *k)
{
	return eng_sess_lookup(s, eng_hash(s, k), k, NULL);
}

uint32_t eng_sessions_gc(struct eng_sessions *s, uint64_t now, uint32_t budget)
{
	uint32_t removed = 0;

	for (uint32_t n = 0; n < budget; n++) {
		uint32_t	 idx = s->gc_cursor;
		struct eng_sess *e   = &s->slots[idx];

		s->gc_cursor = (idx + 1) & s->mask;
		if (e->used != 1 || atomic_load_explicit(&e->expires, memory_order_relaxed) >= now)
			continue;
		pthread_spin_lock(&s->lock);
		if (e->used == 1 && atomic_load_explicit(&e->expires, memory_order_relaxed) < now) {
			if (e->dir == ENG_DIR_AFFINITY) {
				eng_sess_delete_locked(s, idx);
				removed++;
			} else {
				/* the peer: the reverse of this entry's rewrite */
				struct eng_key pk = {.saddr = e->nat_daddr,
						     .daddr = e->nat_saddr,
						     .sport = e->nat_dport,
						     .dport = e->nat_sport,
						     .proto = e->proto};
				int64_t	       p  = find_locked(s, &pk);

				if (p < 0 || atomic_load_explicit(&s->slots[p].expires,
								  memory_order_relaxed) < now) {
					eng_sess_delete_locked(s, idx);
					removed++;
					if (p >= 0 && (uint32_t)p != idx) {
						eng_sess_delete_locked(s, (uint32_t)p);
						removed++;
					}
				}
			}
		}
		pthread_spin_unlock(&s->lock);
	}
	return removed;
}

/* ---- the BPF conntrack mirror ------------------------------------------- */

_Static_assert(sizeof(struct ct_key) == 16, "struct ct_key (bpf/lib/types.h)");
_Static_assert(sizeof(struct ct_value) == 64, "struct ct_value (bpf/lib/types.h)");

struct eng_ct_export {
	uint32_t	n;
	struct ct_key	keys[EXPORT_MAX];
	struct ct_value vals[EXPORT_MAX];
};

void eng_ct_flush(struct eng_worker *w)
{
	struct eng_ct_export *x = w->ctx;
	__u32		      count;
	int		      err;

	if (!x || !x->n)
		return;
	count = x->n;
	err   = bpf_map_update_batch(w->e->cfg.ct_fd, x->keys, x->vals, &count, NULL);
	if (err) {
		/* Older kernels or a full map: what was written stays; the rest
		 * is counted and lives in the engine only. */
		w->ct_export_errors += x->n - (count <= x->n ? count : 0);
		w->ct_exported += count <= x->n ? count : 0;
	} else {
		w->ct_exported += x->n;
	}
	x->n = 0;
}

void eng_ct_queue(struct eng_worker *w, const struct eng_sess *s, uint64_t now)
{
	struct eng_ct_export *x = w->ctx;
	struct ct_key	     *k;
	struct ct_value	     *v;

	if (!x)
		return;
	if (x->n == EXPORT_MAX)
		eng_ct_flush(w);
	k = &x->keys[x->n];
	v = &x->vals[x->n];
	x->n++;
	memset(k, 0, sizeof(*k));
	memset(v, 0, sizeof(*v));
	k->saddr      = s->saddr;
	k->daddr      = s->daddr;
	k->sport      = s->sport;
	k->dport      = s->dport;
	k->proto      = s->proto;
	v->expires_ns = atomic_load_explicit(&s->expires, memory_order_relaxed);
	v->created_ns = now;
	v->nat_saddr  = s->nat_saddr;
	v->nat_daddr  = s->nat_daddr;
	v->nat_sport  = s->nat_sport;
	v->nat_dport  = s->nat_dport;
	v->dir	      = s->dir;
	v->state      = atomic_load_explicit(&s->state, memory_order_relaxed);
	v->flags      = s->flags;
	v->svc_id     = s->svc_id;
}

int eng_ct_adopt_lookup(struct eng_worker *w, const struct eng_key *k, uint64_t now,
			struct eng_sess *out)
{
	struct ct_key	ck = {0};
	struct ct_value cv;

	if (w->e->cfg.ct_fd < 0)
		return 0;
	ck.saddr = k->saddr;
	ck.daddr = k->daddr;
	ck.sport = k->sport;
	ck.dport = k->dport;
	ck.proto = k->proto;
	if (bpf_map_lookup_elem(w->e->cfg.ct_fd, &ck, &cv) || cv.dir != CT_DIR_FWD ||
	    cv.expires_ns < now)
		return 0;
	memset(out, 0, sizeof(*out));
	out->dir       = ENG_CT_DIR_FWD;
	out->flags     = cv.flags & (ENG_CT_F_SNAT | ENG_CT_F_HAIRPIN | ENG_CT_F_EXTERNAL);
	out->nat_saddr = cv.nat_saddr;
	out->nat_daddr = cv.nat_daddr;
	out->nat_sport = cv.nat_sport;
	out->nat_dport = cv.nat_dport;
	out->svc_id    = cv.svc_id;
	out->out_port  = 0xff;
	/* from now on the engine carries this direction: its copy is kept
	 * fresh from here (written back on the first packet) */
	out->export_at_s = 0;
	atomic_store(&out->expires, cv.expires_ns);
	atomic_store(&out->state, cv.state);
	w->ct_adopted++;
	return 1;
}

size_t eng_ct_export_size(void);
size_t eng_ct_export_size(void)
{
	return sizeof(struct eng_ct_export);
}
