/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's IPv6 session table: session.c's rules (two entries per flow,
 * lock-free lookups under a per-slot sequence count, inserts and deletions
 * under one spinlock, tombstones, at most half the slots live) over
 * struct eng_sess6, two cache lines per entry, in a table of its own so
 * that IPv4 entries keep one line each.
 *
 * Not mirrored into the BPF conntrack (bpfproxy_ct6): an IPv6 flow the
 * engine opened is not carried on by the kernel path when the engine stops
 * (the client reconnects), and flows the kernel path opened are not adopted.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "engine.h"

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
