/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Concurrent table swaps against the engine's RCU-style reclamation
 * (addon/engine/engine.c), natively, without I/O: `workers` threads run
 * vectors of UDP frames through the whole graph (eng_enter / eng_run /
 * eng_leave, as the AF_XDP loop does) while this thread builds a new table
 * and swaps it in thousands of times (eng_set_table, as the agent does).
 *
 * Every table generation g is recognisable in what comes out:
 *   - frontend A (10.96.0.1:80/UDP) has one backend, 10.1.(g % 16).1:8080,
 *     whose neighbour entry (the only one for that address) carries a MAC
 *     with g in its last four bytes, and port 1's MAC carries g as well;
 *   - frontend B (10.96.0.2:80/UDP) has a backend (10.2.0.1, MAC with g)
 *     in odd generations and none in even ones (rejected: ICMP port
 *     unreachable back out of port 0);
 *   - filler frontends, more or fewer per generation, so that tables differ
 *     in size and the allocator reuses their memory in every pattern.
 * UDP sessions live 1 ns: each vector's flows are new again, so that every
 * packet is decided by the table of its vector (not by an older session).
 *
 * Checked per packet: it was forwarded (or, for B, rejected) - no drop; the
 * backend address, the destination MAC and the source MAC name one and the
 * same generation; that generation lies between the one published before
 * the vector entered and the one pending after it left. A packet decided
 * partly by one table and partly by another, or by a freed (poisoned: the
 * allocator fills freed memory, M_PERTURB; or caught by ASan in the
 * sanitizer build) table, fails one of these. One worker stalls inside a
 * vector now and then (3 ms, and twice 30 ms) holding its table: the swap
 * must then retire the old table (not free it) and, with 8 retired, refuse
 * further swaps until the worker moves on.
 *
 * Checked at the end: node counters add up (input = output + drop, per
 * worker and in eng_stats), swaps counted, retired tables all freed once
 * the workers stopped.
 *
 * --unsafe-free: swap with a plain exchange and free the old table at once
 * (no grace period): the sanitizer build must then report a use after
 * free; test/engine-swap-stress.test.ts runs it to show the checks bite.
 *
 * Bounded: --seconds (default 3) and --swaps (default 5000), whichever
 * comes first, and --max-packets per worker. Prints one JSON line; exit 0
 * when every check held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../addon/engine/engine.h"

#define FLOWS	 512 /* per worker */
#define NFE_BASE 2

static struct {
	uint32_t workers, vector, swaps;
	double	 seconds;
	uint64_t max_packets;
	uint32_t stall_every; /* vectors of worker 0 between stalls; 0: none */
	int	 unsafe_free, hold_check;
} opt = {.workers     = 2,
	 .vector      = 64,
	 .swaps	      = 5000,
	 .seconds     = 3,
	 .max_packets = 50000000,
	 .stall_every = 2000};

static struct eng      *E;
static _Atomic uint32_t published; /* generation in force for sure */
static _Atomic uint32_t pending;   /* generation being swapped in (>= published) */
static _Atomic int	stop;
static _Atomic uint64_t failures;
static pthread_mutex_t	fail_mu = PTHREAD_MUTEX_INITIALIZER;

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&failures, 1) >= 20)
		return; /* the first few say enough */
	pthread_mutex_lock(&fail_mu);
	va_start(ap, fmt);
	fprintf(stderr, "engine-swap-stress: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	pthread_mutex_unlock(&fail_mu);
}

/* ---- tables ------------------------------------------------------------------ */

static uint8_t *wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	return p + 2;
}
static uint8_t *wr32(uint8_t *p, uint32_t v)
{
	wr16(p, (uint16_t)v);
	wr16(p + 2, (uint16_t)(v >> 16));
	return p + 4;
}
static uint8_t *wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
	return p + 8;
}
static uint8_t *wraddr(uint8_t *p, uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	p[0] = a;
	p[1] = b;
	p[2] = c;
	p[3] = d;
	return p + 4;
}
static void gen_mac(uint8_t *m, uint8_t kind, uint32_t g)
{
	m[0] = 0x02;
	m[1] = kind;
	m[2] = (uint8_t)(g >> 24);
	m[3] = (uint8_t)(g >> 16);
	m[4] = (uint8_t)(g >> 8);
	m[5] = (uint8_t)g;
}
static uint32_t mac_gen(const uint8_t *m)
{
	return (uint32_t)m[2] << 24 | (uint32_t)m[3] << 16 | (uint32_t)m[4] << 8 | m[5];
}

static uint8_t *frontend(uint8_t *p, uint8_t c, uint8_t d, uint16_t port, uint32_t svc,
			 uint32_t be_start, uint16_t count)
{
	p    = wraddr(p, 10, 96, c, d);
	p    = wr16(p, port);
	*p++ = 17;
	*p++ = 0; /* flags: ClusterIP, traffic policy Cluster */
	p    = wr32(p, svc);
	p    = wr32(p, 0); /* affinity */
	p    = wr32(p, be_start);
	p    = wr16(p, count);
	p    = wr16(p, 0);
	p    = wr32(p, 0);
	p    = wr16(p, 0);
	return wr16(p, 0);
}

/* The blob of generation g (addon/engine/table.c layout). */
static struct eng_table *build_table(uint32_t g)
{
	uint32_t	  fillers = g % 97, nfe = NFE_BASE + fillers, b_live = g & 1;
	uint32_t	  nbe = 1 + b_live + fillers, nneigh = 1 + b_live;
	size_t		  len = 128 + 2 * 32 + 4 + nfe * 32 + nbe * 8 + nneigh * 16;
	uint8_t		 *buf = calloc(1, len), *p = buf, mac[6];
	char		  why[256];
	struct eng_table *t;

	if (!buf)
		return NULL;
	p = wr32(p, 0x45585042u);
	p = wr16(p, 3);
	p = wr16(p, 128);
	p = wr32(p, g);
	p = wr32(p, 2);
	p = wr32(p, 1);
	p = wr32(p, nfe);
	p = wr32(p, nbe);
	p = wr32(p, nneigh);
	p = wr16(p, 30000);
	p = wr16(p, 32767);
	p = wraddr(p, 169, 254, 0, 1);
	p = wr64(p, 60000000000ULL); /* tcp syn */
	p = wr64(p, 60000000000ULL);
	p = wr64(p, 60000000000ULL);
	p = wr64(p, 60000000000ULL);
	p = wr64(p, 1); /* udp: 1 ns, every vector opens its flows anew */
	p = wr32(p, (uint32_t)len);
	p = wr32(p, 0);
	p = wr32(p, 0);
	p = wr32(p, 0);
	p += 32; /* no IPv6 sections (counts 0, hairpin ::) */
	/* ports: 0 the pods' side (no SNAT), 1 towards the backends */
	p = wr32(p, 1);
	p = wr32(p, ENG_PORT_F_POD);
	gen_mac(p, 0xa0, 0);
	memcpy(p + 8, "pods", 4);
	p += 24;
	p = wr32(p, 2);
	p = wr32(p, 0);
	gen_mac(p, 0xa1, g);
	memcpy(p + 8, "uplink", 6);
	p += 24;
	p = wraddr(p, 10, 0, 0, 1);
	/* frontends: A, B, fillers (one backend each, no neighbour) */
	p = frontend(p, 0, 1, 80, 1, 0, 1);
	p = frontend(p, 0, 2, 80, 2, 1, (uint16_t)b_live);
	for (uint32_t i = 0; i < fillers; i++)
		p = frontend(p, 1 + (uint8_t)(i >> 8), (uint8_t)i, 80, 100 + i, 1 + b_live + i, 1);
	/* backends */
	p = wraddr(p, 10, 1, (uint8_t)(g % 16), 1);
	p = wr16(p, 8080);
	p += 2;
	if (b_live) {
		p = wraddr(p, 10, 2, 0, 1);
		p = wr16(p, 8080);
		p += 2;
	}
	for (uint32_t i = 0; i < fillers; i++) {
		p = wraddr(p, 10, 3, (uint8_t)(i >> 8), (uint8_t)(1 + i));
		p = wr16(p, 8080);
		p += 2;
	}
	/* neighbours: the backends of A and B, MACs naming g */
	p    = wraddr(p, 10, 1, (uint8_t)(g % 16), 1);
	p    = wraddr(p, 0, 0, 0, 0);
	*p++ = 1;
	gen_mac(mac, 0xb1, g);
	memcpy(p, mac, 6);
	p += 7;
	if (b_live) {
		p    = wraddr(p, 10, 2, 0, 1);
		p    = wraddr(p, 0, 0, 0, 0);
		*p++ = 1;
		gen_mac(mac, 0xb2, g);
		memcpy(p, mac, 6);
		p += 7;
	}
	if ((size_t)(p - buf) != len) {
		fprintf(stderr,
			"engine-swap-stress: table of generation %u: wrote %zu of %zu bytes\n", g,
			(size_t)(p - buf), len);
		free(buf);
		return NULL;
	}
	t = eng_table_parse(buf, len, why, sizeof(why));
	free(buf);
	if (!t)
		fprintf(stderr, "engine-swap-stress: table of generation %u refused: %s\n", g, why);
	return t;
}

/* ---- frames ---------------------------------------------------------------------- */

static uint16_t ip_csum(const uint8_t *ip)
{
	uint32_t s = 0;

	for (int i = 0; i < 20; i += 2)
		s += (uint32_t)ip[i] << 8 | ip[i + 1];
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* Flow f of worker w: 10.50.w.1:(1024 + f) -> A (3 in 4) or B. */
static uint16_t build_frame(uint8_t *d, uint32_t w, uint32_t f)
{
	uint8_t *ip = d + 14, *udp = d + 34;
	uint16_t sp = (uint16_t)(1024 + f), c;

	memset(d, 0, 64);
	gen_mac(d, 0xcc, 0);
	gen_mac(d + 6, 0xdd, w);
	d[12] = 0x08;
	ip[0] = 0x45;
	ip[3] = 20 + 8 + 18;
	ip[8] = 64;
	ip[9] = 17;
	wraddr(ip + 12, 10, 50, (uint8_t)w, 1);
	wraddr(ip + 16, 10, 96, 0, f % 4 == 3 ? 2 : 1);
	c      = ip_csum(ip);
	ip[10] = (uint8_t)(c >> 8);
	ip[11] = (uint8_t)c;
	udp[0] = (uint8_t)(sp >> 8);
	udp[1] = (uint8_t)sp;
	udp[2] = 0;
	udp[3] = 80;
	udp[5] = 8 + 18;
	return 14 + 20 + 8 + 18;
}

/* ---- workers ---------------------------------------------------------------------- */

struct wctx {
	struct eng_worker *w;
	uint32_t	   id;
	pthread_t	   th;
	uint64_t	   packets, forwarded, rejected, vectors, stalls;
	uint64_t	   seen_lo, seen_hi; /* generations seen */
	uint8_t		   tmpl[FLOWS][64];
	uint16_t	   tlen[FLOWS];
	uint8_t (*buf)[ENG_FRAME_SIZE];
};

static void keep(struct eng_worker *w, uint32_t i)
{
	(void)w;
	(void)i;
}

static void check_packet(struct wctx *c, uint32_t i, uint32_t f, uint32_t lo, uint32_t hi)
{
	struct eng_vec *v = &c->w->v;
	const uint8_t  *d = v->data[i], *ip = d + 14;
	int		to_b = f % 4 == 3;
	uint32_t	g;

	if (v->next[i] != ENG_N_OUTPUT) {
		failf("worker %u flow %u: dropped (%s) under generations %u-%u", c->id, f,
		      eng_reason_names[v->reason[i] < ENG_R__MAX ? v->reason[i] : 0], lo, hi);
		return;
	}
	if (v->reason[i] == ENG_R_REJECTED) {
		/* B without backends: only even generations have none */
		if (!to_b || ip[9] != 1 || v->out_port[i] != 0 || (lo == hi && (lo & 1)))
			failf("worker %u flow %u: rejected (proto %u, port %u) under generations "
			      "%u-%u, none of which rejects it",
			      c->id, f, ip[9], v->out_port[i], lo, hi);
		else
			c->rejected++;
		return;
	}
	g = mac_gen(d);
	if (d[1] != (to_b ? 0xb2 : 0xb1) || mac_gen(d + 6) != g || d[7] != 0xa1 ||
	    v->out_port[i] != 1 || g < lo || g > hi ||
	    (to_b ? (!(g & 1) || ip[16] != 10 || ip[17] != 2 || ip[18] != 0 || ip[19] != 1)
		  : (ip[16] != 10 || ip[17] != 1 || ip[18] != g % 16 || ip[19] != 1)) ||
	    ip[22] != 0x1f || ip[23] != 0x90) {
		failf("worker %u flow %u: forwarded to %u.%u.%u.%u:%u via port %u, dst MAC of "
		      "generation %u (kind %02x), src MAC of %u; the vector ran under generations "
		      "%u-%u: a mix of tables or a freed one",
		      c->id, f, ip[16], ip[17], ip[18], ip[19], ip[22] << 8 | ip[23],
		      v->out_port[i], g, d[1], mac_gen(d + 6), lo, hi);
		return;
	}
	if (g < c->seen_lo)
		c->seen_lo = g;
	if (g > c->seen_hi)
		c->seen_hi = g;
	c->forwarded++;
}

static void *worker_main(void *arg)
{
	struct wctx	  *c	= arg;
	struct eng_worker *w	= c->w;
	uint64_t	   last = 0;
	uint32_t	   f0	= 0;

	w->output = keep;
	w->drop	  = keep;
	while (!atomic_load_explicit(&stop, memory_order_relaxed) && c->packets < opt.max_packets) {
		const struct eng_table *t;
		uint32_t		lo, hi, n = opt.vector;
		uint64_t		now = eng_now_ns();

		if (now <= last + 2)
			now = last + 3; /* last vector's sessions (1 ns) have expired */
		last = now;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t f = (f0 + i) % FLOWS;

			memcpy(c->buf[i], c->tmpl[f], c->tlen[f]);
			w->v.data[i]	 = c->buf[i];
			w->v.addr[i]	 = i;
			w->v.len[i]	 = c->tlen[f];
			w->v.cap[i]	 = ENG_FRAME_SIZE;
			w->v.rx_port[i]	 = 0;
			w->v.out_port[i] = 0xff;
		}
		w->v.n = n;
		lo     = atomic_load(&published);
		t      = eng_enter(w);
		if (c->id == 0 && opt.stall_every &&
		    c->vectors % opt.stall_every == opt.stall_every - 1) {
			/* hold the table across a stall: the swaps meanwhile
			 * must retire it, not free it (twice long enough to fill
			 * the retired list) */
			struct timespec d = {.tv_nsec = (c->stalls == 2 || c->stalls == 5)
								? 30 * 1000 * 1000
								: 3 * 1000 * 1000};

			nanosleep(&d, NULL);
			c->stalls++;
		}
		eng_run(w, t, now, ENG_N__MAX);
		eng_leave(w);
		hi = atomic_load(&pending);
		for (uint32_t i = 0; i < n; i++)
			check_packet(c, i, (f0 + i) % FLOWS, lo, hi);
		f0 = (f0 + n) % FLOWS;
		c->packets += n;
		c->vectors++;
	}
	return NULL;
}

static double now_s(void)
{
	return (double)eng_now_ns() / 1e9;
}

/* ---- --hold-check -------------------------------------------------------------------- */

static _Atomic int holding;

/* One vector that holds its table HOLD_MS (a worker descheduled inside it). */
#define HOLD_MS 40
static void *hold_main(void *arg)
{
	struct wctx	       *c = arg;
	struct eng_worker      *w = c->w;
	const struct eng_table *t;
	struct timespec		d = {.tv_nsec = HOLD_MS * 1000 * 1000};
	uint32_t		lo;

	w->output = keep;
	w->drop	  = keep;
	for (uint32_t i = 0; i < opt.vector; i++) {
		memcpy(c->buf[i], c->tmpl[i % FLOWS], c->tlen[i % FLOWS]);
		w->v.data[i]	 = c->buf[i];
		w->v.addr[i]	 = i;
		w->v.len[i]	 = c->tlen[i % FLOWS];
		w->v.cap[i]	 = ENG_FRAME_SIZE;
		w->v.rx_port[i]	 = 0;
		w->v.out_port[i] = 0xff;
	}
	w->v.n = opt.vector;
	lo     = atomic_load(&published);
	t      = eng_enter(w);
	atomic_store(&holding, 1);
	nanosleep(&d, NULL);
	eng_run(w, t, eng_now_ns(), ENG_N__MAX);
	eng_leave(w);
	for (uint32_t i = 0; i < opt.vector; i++)
		check_packet(c, i, i % FLOWS, lo, lo);
	c->packets = opt.vector;
	return NULL;
}

/* While one worker holds its table HOLD_MS inside a vector, 12 swaps: the
 * first 8 retire their old tables (each after waiting 2 ms for the
 * worker), the next ones find the retired list full and must wait for the
 * worker rather than refuse the table. */
static int hold_check(struct wctx *c)
{
	uint32_t g = atomic_load(&published), refused = 0;
	double	 t0;

	if (pthread_create(&c->th, NULL, hold_main, c))
		return 1;
	while (!atomic_load(&holding))
		usleep(100);
	t0 = now_s();
	for (int k = 0; k < 12; k++) {
		struct eng_table *t = build_table(g + 1);

		if (!t)
			return 1;
		atomic_store(&pending, g + 1);
		if (eng_set_table(E, t)) {
			eng_table_free(t);
			atomic_store(&pending, g);
			refused++;
			continue;
		}
		atomic_store(&published, ++g);
	}
	pthread_join(c->th, NULL);
	pthread_mutex_lock(&E->table_mu);
	eng_reclaim(E);
	pthread_mutex_unlock(&E->table_mu);
	if (refused)
		failf("%u of 12 swaps refused while a worker held its table %d ms", refused,
		      HOLD_MS);
	if (E->nretired)
		failf("%u retired tables left after the worker left its vector", E->nretired);
	printf("{\"ok\":%s,\"holdMs\":%d,\"swaps\":12,\"refused\":%u,\"seconds\":%.3f,"
	       "\"forwarded\":%llu,\"rejected\":%llu,\"failures\":%llu}\n",
	       atomic_load(&failures) ? "false" : "true", HOLD_MS, refused, now_s() - t0,
	       (unsigned long long)c->forwarded, (unsigned long long)c->rejected,
	       (unsigned long long)atomic_load(&failures));
	return atomic_load(&failures) ? 1 : 0;
}

/* ---- swaps ------------------------------------------------------------------------- */

static int swap_unsafe(struct eng_table *t)
{
	struct eng_table *old = atomic_exchange(&E->table, t);

	E->swaps++;
	eng_table_free(old); /* no grace period: what the RCU scheme prevents */
	return 0;
}

int main(int argc, char **argv)
{
	struct eng_config cfg = {.ct_fd = -1, .ct6_fd = -1, .sessions = 65536};
	struct wctx	 *ctx;
	char		  why[256];
	uint64_t	  busy = 0, retired_max = 0, swaps_ok = 0, retired_seen = 0;
	double		  t0, took;
	uint32_t	  g = 1;
	struct eng_stats  st;
	uint64_t	  in = 0, outp = 0, drop = 0, packets = 0, fwd = 0, rej = 0;
	int		  ok;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--workers") && i + 1 < argc)
			opt.workers = (uint32_t)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--vector") && i + 1 < argc)
			opt.vector = (uint32_t)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--swaps") && i + 1 < argc)
			opt.swaps = (uint32_t)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			opt.seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--max-packets") && i + 1 < argc)
			opt.max_packets = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--stall-every") && i + 1 < argc)
			opt.stall_every = (uint32_t)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--unsafe-free"))
			opt.unsafe_free = 1;
		else if (!strcmp(argv[i], "--hold-check"))
			opt.hold_check = 1;
		else {
			fprintf(stderr,
				"usage: %s [--workers N] [--vector N] [--swaps N] [--seconds S] "
				"[--max-packets N] [--stall-every N] [--unsafe-free | "
				"--hold-check]\n",
				argv[0]);
			return 2;
		}
	}
	if (opt.workers < 1 || opt.workers > 8 || opt.vector < 1 || opt.vector > ENG_VEC_MAX ||
	    opt.seconds <= 0 || opt.seconds > 60) {
		fprintf(stderr, "engine-swap-stress: workers 1-8, vector 1-%d, seconds (0, 60]\n",
			ENG_VEC_MAX);
		return 2;
	}
	/* freed memory is overwritten: a read of a freed table sees garbage */
	mallopt(M_PERTURB, 0xa5);
	cfg.vector = opt.vector;
	E	   = eng_create(&cfg, why, sizeof(why));
	if (!E) {
		fprintf(stderr, "engine-swap-stress: engine: %s\n", why);
		return 1;
	}
	{
		struct eng_table *t = build_table(g);

		if (!t || eng_set_table(E, t))
			return 1;
		atomic_store(&published, g);
		atomic_store(&pending, g);
	}
	ctx = calloc(opt.workers, sizeof(*ctx));
	if (!ctx)
		return 1;
	/* registered as the I/O layer registers its workers: the swaps wait
	 * for exactly these */
	for (uint32_t i = 0; i < opt.workers; i++) {
		ctx[i].id      = i;
		ctx[i].w       = eng_worker_new(E, i);
		ctx[i].buf     = aligned_alloc(64, (size_t)ENG_VEC_MAX * ENG_FRAME_SIZE);
		ctx[i].seen_lo = UINT64_MAX;
		if (!ctx[i].w || !ctx[i].buf)
			return 1;
		for (uint32_t f = 0; f < FLOWS; f++)
			ctx[i].tlen[f] = build_frame(ctx[i].tmpl[f], i, f);
		E->workers[i] = ctx[i].w;
	}
	E->nworkers = opt.workers;
	if (opt.hold_check) {
		ok = hold_check(&ctx[0]) == 0;
		goto out;
	}
	for (uint32_t i = 0; i < opt.workers; i++)
		if (pthread_create(&ctx[i].th, NULL, worker_main, &ctx[i]))
			return 1;

	t0 = now_s();
	while (swaps_ok < opt.swaps && now_s() - t0 < opt.seconds && atomic_load(&failures) == 0) {
		struct eng_table *t = build_table(g + 1);

		if (!t) {
			failf("table of generation %u could not be built", g + 1);
			break;
		}
		atomic_store(&pending, g + 1);
		if (opt.unsafe_free ? swap_unsafe(t) : eng_set_table(E, t)) {
			/* older tables still held (a stalled worker): retry */
			eng_table_free(t);
			atomic_store(&pending, g);
			busy++;
			usleep(200);
			continue;
		}
		g++;
		swaps_ok++;
		atomic_store(&published, g);
		if (E->nretired > retired_max)
			retired_max = E->nretired;
		retired_seen += E->nretired > 0;
	}
	took = now_s() - t0;
	atomic_store(&stop, 1);
	for (uint32_t i = 0; i < opt.workers; i++)
		pthread_join(ctx[i].th, NULL);

	/* the workers are out: every retired table goes now */
	pthread_mutex_lock(&E->table_mu);
	eng_reclaim(E);
	pthread_mutex_unlock(&E->table_mu);
	if (E->nretired)
		failf("%u retired tables left after every worker stopped", E->nretired);
	if (E->swaps != swaps_ok + 1)
		failf("engine counted %llu swaps, %llu were made", (unsigned long long)E->swaps,
		      (unsigned long long)swaps_ok + 1);
	for (uint32_t i = 0; i < opt.workers; i++) {
		const struct eng_worker *w = ctx[i].w;

		if (w->nodes[ENG_N_INPUT].packets != ctx[i].packets ||
		    w->nodes[ENG_N_OUTPUT].packets + w->nodes[ENG_N_DROP].packets !=
			    ctx[i].packets ||
		    w->reasons[ENG_R_REJECTED] != ctx[i].rejected)
			failf("worker %u: counters do not add up: input %llu, output %llu, drop "
			      "%llu, rejected %llu; ran %llu packets, %llu rejected",
			      i, (unsigned long long)w->nodes[ENG_N_INPUT].packets,
			      (unsigned long long)w->nodes[ENG_N_OUTPUT].packets,
			      (unsigned long long)w->nodes[ENG_N_DROP].packets,
			      (unsigned long long)w->reasons[ENG_R_REJECTED],
			      (unsigned long long)ctx[i].packets,
			      (unsigned long long)ctx[i].rejected);
		packets += ctx[i].packets;
		fwd += ctx[i].forwarded;
		rej += ctx[i].rejected;
	}
	eng_stats(E, &st);
	in   = st.nodes[ENG_N_INPUT].packets;
	outp = st.nodes[ENG_N_OUTPUT].packets;
	drop = st.nodes[ENG_N_DROP].packets;
	if (in != packets || outp + drop != in || st.swaps != swaps_ok + 1 || st.retired)
		failf("eng_stats: input %llu, output %llu, drop %llu, swaps %llu, retired %u; ran "
		      "%llu packets, %llu swaps",
		      (unsigned long long)in, (unsigned long long)outp, (unsigned long long)drop,
		      (unsigned long long)st.swaps, st.retired, (unsigned long long)packets,
		      (unsigned long long)swaps_ok + 1);
	if (st.table.generation != g)
		failf("table in force is generation %u, the last swapped in was %u",
		      st.table.generation, g);
	if (fwd + rej != packets)
		failf("%llu packets ran, %llu checked good", (unsigned long long)packets,
		      (unsigned long long)(fwd + rej));
	ok = atomic_load(&failures) == 0;
	printf("{\"ok\":%s,\"workers\":%u,\"vector\":%u,\"seconds\":%.3f,\"swaps\":%llu,"
	       "\"swapsRefused\":%llu,\"retiredMax\":%llu,\"swapsWithRetired\":%llu,"
	       "\"packets\":%llu,\"forwarded\":%llu,\"rejected\":%llu,\"stalls\":%llu,"
	       "\"failures\":%llu,\"unsafeFree\":%s}\n",
	       ok ? "true" : "false", opt.workers, opt.vector, took, (unsigned long long)swaps_ok,
	       (unsigned long long)busy, (unsigned long long)retired_max,
	       (unsigned long long)retired_seen, (unsigned long long)packets,
	       (unsigned long long)fwd, (unsigned long long)rej, (unsigned long long)ctx[0].stalls,
	       (unsigned long long)atomic_load(&failures), opt.unsafe_free ? "true" : "false");
out:
	for (uint32_t i = 0; i < opt.workers; i++) {
		E->workers[i] = NULL;
		eng_worker_free(ctx[i].w);
		free(ctx[i].buf);
	}
	E->nworkers = 0;
	eng_destroy(E);
	free(ctx);
	return ok ? 0 : 1;
}
