/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's IPv6 session table: session.c's rules (two entries per flow,
 * lock-free lookups under a per-slot sequence count, inserts and deletions
 * under one spinlock, tombstones, at most half the slots live) over
 * struct eng_sess6, two cache lines per entry, in a table of its own so
 * that IPv4 entries keep one line each.
 *
 * The conntrack mirror: with the bpfproxy_ct6 fd, each worker queues the
 * BPF copy of the IPv6 entries it creates or changes and writes them in one
 * batch per vector, as session.c does for IPv4: the kernel path carries the
 * engine's IPv6 flows on when the engine stops, and the XDP program knows
 * which IPv6 replies are the engine's; flows the kernel path opened before
 * the engine took their frontend are adopted from it (as session.c does).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <linux/types.h>
#include <bpf/bpf.h>
#include "../../bpf/lib/types.h"
#include "../../bpf/lib/types6.h"

#include "engine.h"

#define EXPORT6_MAX (2 * ENG_VEC_MAX)

_Static_assert(sizeof(struct ct6_key) == 40, "struct ct6_key (bpf/lib/types6.h)");

struct eng_ct6_export {
	uint32_t	 n;
	struct ct6_key	 keys[EXPORT6_MAX];
	struct ct6_value vals[EXPORT6_MAX];
};

size_t eng_ct6_export_size(void)
{
	return sizeof(struct eng_ct6_export);
}

void eng_ct6_flush(struct eng_worker *w)
{
	struct eng_ct6_export *x = w->ctx6;
	__u32		       count;
	int		       err;

	if (!x || !x->n)
		return;
	count = x->n;
	err   = bpf_map_update_batch(w->e->cfg.ct6_fd, x->keys, x->vals, &count, NULL);
	if (err) {
		w->ct_export_errors += x->n - (count <= x->n ? count : 0);
		w->ct_exported += count <= x->n ? count : 0;
	} else {
		w->ct_exported += x->n;
	}
	x->n = 0;
}

void eng_ct6_queue(struct eng_worker *w, const struct eng_sess6 *s, uint64_t now)
{
	struct eng_ct6_export *x = w->ctx6;
	struct ct6_key	      *k;
	struct ct6_value      *v;

	if (!x)
		return;
	if (x->n == EXPORT6_MAX)
		eng_ct6_flush(w);
	k = &x->keys[x->n];
	v = &x->vals[x->n];
	x->n++;
	memset(k, 0, sizeof(*k));
	memset(v, 0, sizeof(*v));
	memcpy(&k->saddr, &s->saddr, 16);
	memcpy(&k->daddr, &s->daddr, 16);
	k->sport      = s->sport;
	k->dport      = s->dport;
	k->proto      = s->proto;
	v->expires_ns = atomic_load_explicit(&s->expires, memory_order_relaxed);
	v->created_ns = now;
	memcpy(&v->nat_saddr, &s->nat_saddr, 16);
	memcpy(&v->nat_daddr, &s->nat_daddr, 16);
	v->nat_sport = s->nat_sport;
	v->nat_dport = s->nat_dport;
	v->dir	     = s->dir;
	v->state     = atomic_load_explicit(&s->state, memory_order_relaxed);
	v->flags     = s->flags;
	v->svc_id    = s->svc_id;
}

int eng_sessions6_init(struct eng_sessions6 *s, uint32_t entries)
{
	uint64_t slots = 16;
	void	*m;

	memset(s, 0, sizeof(*s));
	if (entries < 8)
		entries = 8;
	while (slots < (uint64_t)entries * 2)
		slots <<= 1;
	if (slots > (1ULL << 28))
		return -E2BIG;
	s->bytes = slots * sizeof(struct eng_sess6);
	m = mmap(NULL, s->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -errno;
	madvise(m, s->bytes, MADV_HUGEPAGE);
	memset(m, 0, s->bytes);
	s->slots = m;
	s->mask	 = (uint32_t)(slots - 1);
	s->limit = entries;
	if (getrandom(&s->seed, sizeof(s->seed), 0) != sizeof(s->seed))
		s->seed = 0x7f4a7c159e3779b9ULL ^ (uint64_t)(uintptr_t)m;
	pthread_spin_init(&s->lock, PTHREAD_PROCESS_PRIVATE);
	return 0;
}

void eng_sessions6_destroy(struct eng_sessions6 *s)
{
	if (s->slots) {
		munmap(s->slots, s->bytes);
		pthread_spin_destroy(&s->lock);
	}
	s->slots = NULL;
}

void eng_sessions6_clear(struct eng_sessions6 *s)
{
	pthread_spin_lock(&s->lock);
	memset(s->slots, 0, s->bytes);
	atomic_store(&s->live, 0);
	atomic_store(&s->tombs, 0);
	s->gc_cursor = 0;
	pthread_spin_unlock(&s->lock);
}

static void slot_write_begin(struct eng_sess6 *e)
{
	atomic_store_explicit(&e->seq, atomic_load_explicit(&e->seq, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static void slot_write_end(struct eng_sess6 *e)
{
	atomic_store_explicit(&e->seq, atomic_load_explicit(&e->seq, memory_order_relaxed) + 1,
			      memory_order_release);
}

int64_t eng_sess6_insert_hashed_locked(struct eng_sessions6 *s, uint32_t h,
				       const struct eng_key6 *k, const struct eng_sess6 *val)
{
	int64_t target = -1, first_free = -1;
	uint8_t was;

	for (uint32_t i = 0; i < ENG_PROBE_MAX; i++) {
		uint32_t	  idx = (h + i) & s->mask;
		struct eng_sess6 *e   = &s->slots[idx];

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
		if (eng_key6_eq(e, k)) {
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
		struct eng_sess6 *e = &s->slots[target];

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

void eng_sess6_delete_locked(struct eng_sessions6 *s, uint32_t slot)
{
	struct eng_sess6 *e = &s->slots[slot & s->mask];
	uint32_t	  i;

	if (e->used != 1)
		return;
	slot_write_begin(e);
	e->used = 2;
	slot_write_end(e);
	atomic_fetch_sub_explicit(&s->live, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->tombs, 1, memory_order_relaxed);
	if (s->slots[(slot + 1) & s->mask].used != 0)
		return;
	for (i = slot;; i = (i - 1) & s->mask) {
		struct eng_sess6 *t = &s->slots[i & s->mask];

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

uint32_t eng_sessions6_gc(struct eng_sessions6 *s, uint64_t now, uint32_t budget)
{
	uint32_t removed = 0;

	if (!s->slots)
		return 0;
	for (uint32_t n = 0; n < budget; n++) {
		uint32_t	  idx = s->gc_cursor;
		struct eng_sess6 *e   = &s->slots[idx];

		s->gc_cursor = (idx + 1) & s->mask;
		if (e->used != 1 || atomic_load_explicit(&e->expires, memory_order_relaxed) >= now)
			continue;
		pthread_spin_lock(&s->lock);
		if (e->used == 1 && atomic_load_explicit(&e->expires, memory_order_relaxed) < now) {
			if (e->dir == ENG_DIR_AFFINITY) {
				eng_sess6_delete_locked(s, idx);
				removed++;
			} else {
				struct eng_key6 pk = {.saddr = e->nat_daddr,
						      .daddr = e->nat_saddr,
						      .sport = e->nat_dport,
						      .dport = e->nat_sport,
						      .proto = e->proto};
				int64_t		p  = eng_sess6_lookup(s, eng_hash6(s, &pk), &pk, NULL);

				if (p < 0 || atomic_load_explicit(&s->slots[p].expires,
								  memory_order_relaxed) < now) {
					eng_sess6_delete_locked(s, idx);
					removed++;
					if (p >= 0 && (uint32_t)p != idx) {
						eng_sess6_delete_locked(s, (uint32_t)p);
						removed++;
					}
				}
			}
		}
		pthread_spin_unlock(&s->lock);
	}
	return removed;
}

int eng_ct6_adopt_lookup(struct eng_worker *w, const struct eng_key6 *k, uint64_t now,
			 struct eng_sess6 *out)
{
	struct ct6_key	 ck;
	struct ct6_value cv;

	if (w->e->cfg.ct6_fd < 0)
		return 0;
	memset(&ck, 0, sizeof(ck));
	memcpy(&ck.saddr, &k->saddr, 16);
	memcpy(&ck.daddr, &k->daddr, 16);
	ck.sport = k->sport;
	ck.dport = k->dport;
	ck.proto = k->proto;
	if (bpf_map_lookup_elem(w->e->cfg.ct6_fd, &ck, &cv) || cv.dir != CT_DIR_FWD ||
	    cv.expires_ns < now)
		return 0;
	memset(out, 0, sizeof(*out));
	out->dir   = ENG_CT_DIR_FWD;
	out->flags = cv.flags & (ENG_CT_F_SNAT | ENG_CT_F_HAIRPIN | ENG_CT_F_EXTERNAL);
	memcpy(&out->nat_saddr, &cv.nat_saddr, 16);
	memcpy(&out->nat_daddr, &cv.nat_daddr, 16);
	out->nat_sport	 = cv.nat_sport;
	out->nat_dport	 = cv.nat_dport;
	out->svc_id	 = cv.svc_id;
	out->out_port	 = 0xff;
	out->export_at_s = 0;
	atomic_store(&out->expires, cv.expires_ns);
	atomic_store(&out->state, cv.state);
	w->ct_adopted++;
	return 1;
}
