/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine object: configuration, the table in force and its RCU-style
 * swap, workers, tracing.
 *
 * Table swaps (make-before-break): the agent's thread builds a complete
 * table (table.c) and swaps the pointer in one atomic exchange. A worker
 * loads the pointer once per vector between two increments of its
 * quiescent-state counter (odd: inside a vector). The old table is freed
 * once every worker was outside a vector at the swap or has moved on since:
 * no worker ever sees a half-written or freed table. Parked workers (no
 * traffic, waiting in poll()) are outside a vector and hold nothing.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"

size_t eng_ct_export_size(void);

/* How long a swap waits for a worker when every retired slot is taken. */
#define RETIRED_FULL_WAIT_NS (50ULL * 1000 * 1000)

const char *const eng_reason_names[ENG_R__MAX] = {
	[ENG_R_NONE]		   = "none",
	[ENG_R_SHORT_FRAME]	   = "short-frame",
	[ENG_R_NOT_IPV4]	   = "not-ipv4",
	[ENG_R_IP_VERSION]	   = "ip-version",
	[ENG_R_IP_HDR_LEN]	   = "ip-header-length",
	[ENG_R_IP_TOTAL_LEN]	   = "ip-total-length",
	[ENG_R_IP_CHECKSUM]	   = "ip-checksum",
	[ENG_R_FRAGMENT]	   = "fragment",
	[ENG_R_L4_PROTO]	   = "l4-protocol",
	[ENG_R_L4_TRUNCATED]	   = "l4-truncated",
	[ENG_R_TCP_HDR_LEN]	   = "tcp-header-length",
	[ENG_R_UDP_LEN]		   = "udp-length",
	[ENG_R_NO_FRONTEND]	   = "no-frontend",
	[ENG_R_NOT_OPENING]	   = "not-opening",
	[ENG_R_REJECTED]	   = "rejected",
	[ENG_R_NO_LOCAL_ENDPOINTS] = "no-local-endpoints",
	[ENG_R_NO_SNAT_SOURCE]	   = "no-snat-source",
	[ENG_R_NAT_PORTS]	   = "nat-ports",
	[ENG_R_SESSION_FULL]	   = "session-full",
	[ENG_R_NO_NEIGHBOUR]	   = "no-neighbour",
	[ENG_R_TTL]		   = "ttl",
	[ENG_R_RST_NOT_ANSWERED]   = "rst-not-answered",
	[ENG_R_TX_FULL]		   = "tx-full",
	[ENG_R_NO_TX_PORT]	   = "no-tx-port",
	[ENG_R_ICMP_UNRELATED]	   = "icmp-unrelated",
	[ENG_R_POLICY_DENIED]	   = "policy-denied",
	[ENG_R_POLICY_NO_TABLE]	   = "policy-no-table",
	[ENG_R_POLICY_NOT_LOADED]  = "policy-not-loaded",
	[ENG_R_IP6_PAYLOAD_LEN]	   = "ip6-payload-length",
	[ENG_R_IP6_EXT_HDR]	   = "ip6-extension-header",
	[ENG_R_UDP6_NO_CSUM]	   = "udp6-no-checksum",
	[ENG_R_POLICY_IPV6]	   = "policy-ipv6",
};

uint64_t eng_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ns per tick of eng_ticks(): measured once over ~20 ms. */
static double calibrate(void)
{
	static double	cached;
	uint64_t	n0, t0, n1, t1;
	struct timespec d = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};

	if (cached > 0)
		return cached;
	n0 = eng_now_ns();
	t0 = eng_ticks();
	nanosleep(&d, NULL);
	n1     = eng_now_ns();
	t1     = eng_ticks();
	cached = t1 > t0 ? (double)(n1 - n0) / (double)(t1 - t0) : 1.0;
	return cached;
}

struct eng_worker *eng_worker_new(struct eng *e, uint32_t id)
{
	struct eng_worker *w = aligned_alloc(64, (sizeof(*w) + 63) & ~(size_t)63);

	if (!w)
		return NULL;
	memset(w, 0, sizeof(*w));
	w->e   = e;
	w->id  = id;
	w->rng = e->hash_seed ^ (0x9e3779b97f4a7c15ULL * (id + 1)) ^ eng_now_ns();
	if (!w->rng)
		w->rng = 1;
	w->v6 = aligned_alloc(64, (sizeof(*w->v6) + 63) & ~(size_t)63);
	if (!w->v6) {
		free(w);
		return NULL;
	}
	memset(w->v6, 0, sizeof(*w->v6));
	if (e->cfg.ct_fd >= 0) {
		w->ctx = calloc(1, eng_ct_export_size());
		if (!w->ctx) {
			free(w->v6);
			free(w);
			return NULL;
		}
	}
	if (e->cfg.ct6_fd >= 0) {
		w->ctx6 = calloc(1, eng_ct6_export_size());
		if (!w->ctx6) {
			free(w->ctx);
			free(w->v6);
			free(w);
			return NULL;
		}
	}
	return w;
}

void eng_worker_free(struct eng_worker *w)
{
	if (!w)
		return;
	free(w->ctx);
	free(w->ctx6);
	free(w->v6);
	free(w);
}

struct eng *eng_create(const struct eng_config *cfg, char *why, size_t whylen)
{
	struct eng *e;
	int	    err;

	if (cfg->vector < 1 || cfg->vector > ENG_VEC_MAX) {
		snprintf(why, whylen, "vector size %u: must be 1-%d", cfg->vector, ENG_VEC_MAX);
		return NULL;
	}
	if (cfg->sessions < 16 || cfg->sessions > (1u << 28)) {
		snprintf(why, whylen, "session entries %u: must be 16-%u", cfg->sessions, 1u << 28);
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(why, whylen, "out of memory for the engine");
		return NULL;
	}
	e->cfg = *cfg;
	err    = eng_sessions_init(&e->sessions, cfg->sessions);
	if (err) {
		snprintf(why, whylen, "session table of %u entries: %s", cfg->sessions,
			 strerror(-err));
		free(e);
		return NULL;
	}
	/* IPv6 flows: a table of their own, a quarter of the IPv4 entries
	 * (at least 4096), two cache lines each */
	err = eng_sessions6_init(&e->sessions6, cfg->sessions / 4 > 4096 ? cfg->sessions / 4 : 4096);
	if (err) {
		snprintf(why, whylen, "IPv6 session table of %u entries: %s",
			 cfg->sessions / 4 > 4096 ? cfg->sessions / 4 : 4096, strerror(-err));
		eng_sessions_destroy(&e->sessions);
		free(e);
		return NULL;
	}
	e->hash_seed   = e->sessions.seed;
	e->ns_per_tick = calibrate();
	pthread_mutex_init(&e->table_mu, NULL);
	pthread_mutex_init(&e->trace_mu, NULL);
	e->test_worker = eng_worker_new(e, ENG_MAX_WORKERS);
	if (!e->test_worker) {
		snprintf(why, whylen, "out of memory for the engine's test worker");
		eng_sessions_destroy(&e->sessions);
		eng_sessions6_destroy(&e->sessions6);
		free(e);
		return NULL;
	}
	return e;
}

/* Whether every I/O worker has passed a quiescent point since snap. */
static int all_passed(struct eng *e, const uint64_t *snap)
{
	for (uint32_t i = 0; i < e->nworkers; i++) {
		struct eng_worker *w = e->workers[i];

		if (!w || !(snap[i] & 1))
			continue;
		if (atomic_load_explicit(&w->qs, memory_order_seq_cst) == snap[i])
			return 0;
	}
	return 1;
}

void eng_qs_snapshot(struct eng *e, uint64_t *snap)
{
	for (uint32_t i = 0; i < e->nworkers; i++)
		snap[i] = e->workers[i]
				  ? atomic_load_explicit(&e->workers[i]->qs, memory_order_seq_cst)
				  : 0;
}

int eng_qs_passed(struct eng *e, const uint64_t *snap)
{
	return all_passed(e, snap);
}

void eng_reclaim(struct eng *e)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < e->nretired; i++) {
		if (all_passed(e, e->retired_qs[i])) {
			eng_table_free(e->retired[i]);
			continue;
		}
		e->retired[k] = e->retired[i];
		memcpy(e->retired_qs[k], e->retired_qs[i], sizeof(e->retired_qs[i]));
		k++;
	}
	e->nretired = k;
}

int eng_set_table(struct eng *e, struct eng_table *t)
{
	struct eng_table *old;
	uint64_t	  snap[ENG_MAX_WORKERS + 1];
	uint64_t	  deadline;

	pthread_mutex_lock(&e->table_mu);
	eng_reclaim(e);
	/* Every retired slot taken: a worker has stayed inside one vector
	 * across that many swaps (descheduled on a busy node). Wait for it a
	 * while rather than refuse the table (the caller would keep serving
	 * the previous one). */
	deadline = eng_now_ns() + RETIRED_FULL_WAIT_NS;
	while (e->nretired == sizeof(e->retired) / sizeof(e->retired[0]) &&
	       eng_now_ns() < deadline) {
		struct timespec d = {.tv_sec = 0, .tv_nsec = 100 * 1000};

		nanosleep(&d, NULL);
		eng_reclaim(e);
	}
	if (e->nretired == sizeof(e->retired) / sizeof(e->retired[0])) {
		pthread_mutex_unlock(&e->table_mu);
		return -1;
	}
	old = atomic_exchange_explicit(&e->table, t, memory_order_seq_cst);
	e->swaps++;
	if (!old) {
		pthread_mutex_unlock(&e->table_mu);
		return 0;
	}
	for (uint32_t i = 0; i < e->nworkers; i++)
		snap[i] = e->workers[i]
				  ? atomic_load_explicit(&e->workers[i]->qs, memory_order_seq_cst)
				  : 0;
	/* A vector takes microseconds: wait for it briefly, else later. */
	deadline = eng_now_ns() + 2000000;
	while (!all_passed(e, snap) && eng_now_ns() < deadline)
		sched_yield();
	if (all_passed(e, snap)) {
		eng_table_free(old);
	} else {
		e->retired[e->nretired] = old;
		memcpy(e->retired_qs[e->nretired], snap, sizeof(snap));
		e->nretired++;
	}
	pthread_mutex_unlock(&e->table_mu);
	return 0;
}

void eng_destroy(struct eng *e)
{
	if (!e)
		return;
	eng_io_stop(e);
	eng_table_free(atomic_load(&e->table));
	for (uint32_t i = 0; i < e->nretired; i++)
		eng_table_free(e->retired[i]);
	eng_policy_destroy_all(e);
	eng_worker_free(e->test_worker);
	eng_sessions_destroy(&e->sessions);
	eng_sessions6_destroy(&e->sessions6);
	pthread_mutex_destroy(&e->table_mu);
	pthread_mutex_destroy(&e->trace_mu);
	free(e);
}

void eng_trace_arm(struct eng *e, int32_t n)
{
	pthread_mutex_lock(&e->trace_mu);
	e->ntrace = 0;
	pthread_mutex_unlock(&e->trace_mu);
	atomic_store(&e->trace_budget, n > ENG_TRACE_MAX ? ENG_TRACE_MAX : n);
}

uint32_t eng_trace_take(struct eng *e, struct eng_trace_rec *out, uint32_t max)
{
	uint32_t n;

	pthread_mutex_lock(&e->trace_mu);
	n = e->ntrace < max ? e->ntrace : max;
	memcpy(out, e->trace, n * sizeof(*out));
	memmove(e->trace, e->trace + n, (e->ntrace - n) * sizeof(*out));
	e->ntrace -= n;
	pthread_mutex_unlock(&e->trace_mu);
	return n;
}
