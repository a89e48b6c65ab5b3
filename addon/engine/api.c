/* SPDX-License-Identifier: Apache-2.0 */
/*
 * api.h on top of the internals: figures summed over workers, the test
 * entry (the graph on the caller's thread over given frames) and the
 * benchmark entry (a native loop without I/O, like BPF_PROG_RUN).
 */
#include <arpa/inet.h>
#include <string.h>

#include "engine.h"

void eng_table_info(const struct eng_table *t, struct eng_table_info *out)
{
	out->generation = t->generation;
	out->ports	= t->nports;
	/* both families */
	out->frontends	= t->nfe + t->nfe6;
	out->backends	= t->nbe + t->nbe6;
	out->neighbours = t->nneigh + t->nneigh6;
	out->bytes	= t->bytes;
}

static void add_worker(struct eng_stats *o, const struct eng_worker *w)
{
	for (int n = 0; n < ENG_N__MAX; n++) {
		o->nodes[n].calls += w->nodes[n].calls;
		o->nodes[n].vectors += w->nodes[n].vectors;
		o->nodes[n].packets += w->nodes[n].packets;
		o->nodes[n].ticks += w->nodes[n].ticks;
	}
	for (int r = 0; r < ENG_R__MAX; r++)
		o->reasons[r] += w->reasons[r];
	o->ct_exported += w->ct_exported;
	o->ct_export_errors += w->ct_export_errors;
	o->ct_adopted += w->ct_adopted;
}

void eng_stats(struct eng *e, struct eng_stats *o)
{
	struct eng_table *t;

	memset(o, 0, sizeof(*o));
	for (uint32_t i = 0; i < e->nworkers; i++)
		if (e->workers[i])
			add_worker(o, e->workers[i]);
	add_worker(o, e->test_worker);
	for (int n = 0; n < ENG_N__MAX; n++)
		o->node_ns[n] = (double)o->nodes[n].ticks * e->ns_per_tick;
	o->sessions_live  = atomic_load(&e->sessions.live);
	o->sessions_tombs = atomic_load(&e->sessions.tombs);
	o->sessions_limit = e->sessions.limit;
	o->sessions_slots = (uint64_t)e->sessions.mask + 1;
	o->sessions_bytes = e->sessions.bytes;
	o->sessions_huge  = e->sessions.huge;
	o->sessions6_live  = atomic_load(&e->sessions6.live);
	o->sessions6_limit = e->sessions6.limit;
	o->sessions6_bytes = e->sessions6.bytes;
	o->ct_mirrored	  = e->cfg.ct_fd >= 0;
	t		  = atomic_load(&e->table);
	if (t) {
		o->has_table = 1;
		eng_table_info(t, &o->table);
	}
	o->swaps	   = e->swaps;
	o->retired	   = e->nretired;
	o->vector	   = e->cfg.vector;
	o->policy_required = atomic_load(&e->policy_required);
	/* the policy is read under the swap lock: not freed meanwhile */
	pthread_mutex_lock(&e->table_mu);
	{
		const struct eng_policy *p = atomic_load(&e->policy);

		if (p) {
			o->has_policy = 1;
			eng_policy_info(p, &o->policy);
		}
	}
	pthread_mutex_unlock(&e->table_mu);
}

uint32_t eng_gc(struct eng *e, uint64_t now)
{
	return eng_sessions_gc(&e->sessions, now, e->sessions.mask + 1) +
	       eng_sessions6_gc(&e->sessions6, now, e->sessions6.mask + 1);
}

void eng_clear_sessions(struct eng *e)
{
	eng_sessions_clear(&e->sessions);
	eng_sessions6_clear(&e->sessions6);
}

/* ---- test entry ---------------------------------------------------------------- */

static void keep(struct eng_worker *w, uint32_t i)
{
	(void)w;
	(void)i;
}

int eng_test_run(struct eng *e, uint32_t n, uint8_t *const *data, uint16_t *len,
		 const uint8_t *rx_port, uint64_t now, enum eng_node until, uint8_t *next,
		 uint8_t *reason, uint8_t *port)
{
	struct eng_worker      *w = e->test_worker;
	const struct eng_table *t = atomic_load(&e->table);

	if (!t)
		return -1;
	w->output = keep;
	w->drop	  = keep;
	for (uint32_t base = 0; base < n; base += e->cfg.vector) {
		uint32_t m = n - base < e->cfg.vector ? n - base : e->cfg.vector;

		for (uint32_t i = 0; i < m; i++) {
			w->v.data[i]	 = data[base + i];
			w->v.addr[i]	 = base + i;
			w->v.len[i]	 = len[base + i];
			w->v.cap[i]	 = ENG_FRAME_SIZE;
			w->v.rx_port[i]	 = rx_port[base + i];
			w->v.out_port[i] = 0xff;
		}
		w->v.n = m;
		eng_run(w, t, now, until);
		for (uint32_t i = 0; i < m; i++) {
			next[base + i]	 = w->v.next[i];
			reason[base + i] = w->v.reason[i];
			port[base + i]	 = w->v.out_port[i];
			len[base + i]	 = w->v.len[i];
		}
	}
	return 0;
}

/* ---- benchmark entry -------------------------------------------------------------------- */

/* Make the frame a flow never seen: source port and the low half of the
 * source address from the counter, the IPv4 checksum kept right (the L4
 * checksum is not verified by the engine). IPv6: the source address's last
 * 16 bits and the source port. */
static void new_flow(uint8_t *d, uint16_t len, uint64_t flow)
{
	uint16_t sp = htons((uint16_t)(1024 + (flow & 0x7fff)));
	uint16_t lo, nlo = htons((uint16_t)(flow >> 15)), csum;
	uint32_t sum, ihl;

	if (len >= 58 && d[12] == 0x86 && d[13] == 0xdd) {
		memcpy(d + 14 + 8 + 14, &nlo, 2);
		memcpy(d + 54, &sp, 2);
		return;
	}
	if (len < 38)
		return;
	memcpy(&lo, d + 28, 2);
	memcpy(&csum, d + 24, 2);
	sum = (uint16_t)~csum;
	sum += (uint16_t)~lo;
	sum += nlo;
	sum  = (sum & 0xffff) + (sum >> 16);
	sum  = (sum & 0xffff) + (sum >> 16);
	csum = (uint16_t)~sum;
	memcpy(d + 24, &csum, 2);
	memcpy(d + 28, &nlo, 2);
	ihl = (d[14] & 0x0f) * 4u;
	if (14 + ihl + 2 <= len)
		memcpy(d + 14 + ihl, &sp, 2);
}

int eng_bench(struct eng *e, uint32_t nframes, const uint8_t *const *frames, const uint16_t *lens,
	      uint32_t vec, uint32_t rounds, uint8_t rx_port, int fresh,
	      struct eng_bench_result *out, double *round_ns)
{
	static uint8_t		mem[ENG_VEC_MAX][ENG_FRAME_SIZE] __attribute__((aligned(64)));
	struct eng_worker      *w     = e->test_worker;
	const struct eng_table *t     = atomic_load(&e->table);
	uint64_t		ticks = 0, flow = 0, wall0, out0, drop0;

	memset(out, 0, sizeof(*out));
	if (!t)
		return -1;
	if (vec < 1 || vec > ENG_VEC_MAX)
		vec = ENG_VEC_MAX;
	w->output = keep;
	w->drop	  = keep;
	out0	  = w->nodes[ENG_N_OUTPUT].packets;
	drop0	  = w->nodes[ENG_N_DROP].packets;
	wall0	  = eng_now_ns();
	for (uint32_t round = 0; round <= rounds; round++) {
		int	 warmup = round == 0;
		uint64_t rt	= 0;

		if (warmup && fresh)
			continue;
		for (uint32_t base = 0; base < nframes; base += vec) {
			uint32_t m = nframes - base < vec ? nframes - base : vec;
			uint64_t t0;

			for (uint32_t i = 0; i < m; i++) {
				uint16_t l = lens[base + i];

				memcpy(mem[i], frames[base + i], l);
				if (fresh)
					new_flow(mem[i], l, flow++);
				w->v.data[i]	= mem[i];
				w->v.addr[i]	= i;
				w->v.len[i]	= l;
				w->v.cap[i]	= ENG_FRAME_SIZE;
				w->v.rx_port[i] = rx_port;
			}
			w->v.n = m;
			t0     = eng_ticks();
			eng_run(w, t, eng_now_ns(), ENG_N__MAX);
			if (!warmup) {
				rt += eng_ticks() - t0;
				out->packets += m;
			}
		}
		ticks += rt;
		if (!warmup && round_ns)
			round_ns[round - 1] = (double)rt * e->ns_per_tick;
	}
	out->wall_ns = (double)(eng_now_ns() - wall0);
	out->ns	     = (double)ticks * e->ns_per_tick;
	out->outputs = w->nodes[ENG_N_OUTPUT].packets - out0;
	out->drops   = w->nodes[ENG_N_DROP].packets - drop0;
	return 0;
}
