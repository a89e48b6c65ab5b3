/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AF_XDP I/O for the engine, on raw socket options and ring mmaps (no
 * libxdp): one worker thread per queue index, each owning
 *
 *  - one UMEM (frames x 2048 bytes) shared by its sockets on every port
 *    (XDP_SHARED_UMEM across devices, Linux 5.10+), so a frame received on
 *    one port is transmitted on another without a copy by us;
 *  - per port: an AF_XDP socket bound to (ifindex, queue) with its own
 *    FILL, COMPLETION, RX and TX rings, registered in the XSKMAP slot the
 *    XDP program redirects that queue's frames to (bpf/lib/xsk.h).
 *
 * The loop: reap completions and top the fill rings up from the free-frame
 * stack; take up to `vector` descriptors from the RX rings into one
 * vector; run the graph (nodes.c); write TX descriptors per port and kick
 * with sendto() only when the ring asks for it (XDP_USE_NEED_WAKEUP).
 * Without traffic a worker spins briefly, then parks in poll() (outside
 * any vector: it holds no table). Worker 0 also expires sessions.
 *
 * Zero-copy is tried first where asked (or in auto mode) and the worker
 * falls back to copy mode when the driver has none (veth: copy only).
 */
#include <errno.h>
#include <linux/if_xdp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "engine.h"

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define SPIN_BEFORE_PARK 64
#define PARK_MS		 50
#define GC_EVERY_NS	 (10ULL * 1000 * 1000)
#define TX_KICKS_MAX	 (ENG_VEC_MAX / 32 + 2)

struct ring {
	uint32_t *producer, *consumer, *flags;
	void	 *desc;
	uint32_t  mask, size;
	uint32_t  cached_prod, cached_cons;
	void	 *map;
	size_t	  map_len;
};

struct xport {
	int	    fd;
	uint8_t	    port; /* engine port index (table order) */
	uint32_t    ifindex, queue, slot;
	struct ring fill, comp, rx, tx;
	uint64_t    rx_pkts, tx_pkts, kicks;
};

struct eng_io_worker {
	struct eng_worker *w;
	struct eng_io	  *io;
	uint32_t	   queue;
	uint8_t		  *umem;
	size_t		   umem_len;
	uint32_t	   frames;
	uint64_t	  *free;
	uint32_t	   nfree;
	struct xport	   xp[ENG_MAX_PORTS];
	uint32_t	   nxp;
	int		   by_port[ENG_MAX_PORTS];
	uint16_t	   txi[ENG_MAX_PORTS][ENG_VEC_MAX];
	uint32_t	   txn[ENG_MAX_PORTS];
	struct pollfd	   pfd[ENG_MAX_PORTS];
	uint32_t	   fill_target;
	int		   zerocopy;
};

struct eng_io {
	struct eng_io_config  cfg;
	struct eng_io_worker *iw[ENG_MAX_WORKERS];
	uint32_t	      n;
	_Atomic int	      stop;
};

/* ---- rings ----------------------------------------------------------------- */

static inline uint32_t prod_free(struct ring *r, uint32_t want)
{
	uint32_t free = r->size - (r->cached_prod - r->cached_cons);

	if (free >= want)
		return free;
	r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	return r->size - (r->cached_prod - r->cached_cons);
}

static inline void prod_submit(struct ring *r)
{
	__atomic_store_n(r->producer, r->cached_prod, __ATOMIC_RELEASE);
}

static inline uint32_t cons_avail(struct ring *r, uint32_t want)
{
	uint32_t n = r->cached_prod - r->cached_cons;

	if (n == 0) {
		r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
		n	       = r->cached_prod - r->cached_cons;
	}
	return n < want ? n : want;
}

static inline void cons_release(struct ring *r)
{
	__atomic_store_n(r->consumer, r->cached_cons, __ATOMIC_RELEASE);
}

static inline int needs_wakeup(const struct ring *r)
{
	return __atomic_load_n(r->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP;
}

static int ring_map(int fd, struct ring *r, const struct xdp_ring_offset *off, uint32_t n,
		    size_t desc_size, off_t pgoff, int producer_side)
{
	r->map_len = off->desc + (size_t)n * desc_size;
	r->map	   = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			  pgoff);
	if (r->map == MAP_FAILED) {
		r->map = NULL;
		return -errno;
	}
	r->producer    = (uint32_t *)((uint8_t *)r->map + off->producer);
	r->consumer    = (uint32_t *)((uint8_t *)r->map + off->consumer);
	r->flags       = (uint32_t *)((uint8_t *)r->map + off->flags);
	r->desc	       = (uint8_t *)r->map + off->desc;
	r->size	       = n;
	r->mask	       = n - 1;
	r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
	r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	(void)producer_side; /* free entries: size - (prod - cons), prod_free() */
	return 0;
}

static void ring_unmap(struct ring *r)
{
	if (r->map)
		munmap(r->map, r->map_len);
	memset(r, 0, sizeof(*r));
}

/* ---- sockets ---------------------------------------------------------------- */

static void xport_close(struct eng_io *io, struct xport *x)
{
	if (x->fd >= 0 && io->cfg.xsks_fd >= 0)
		bpf_map_delete_elem(io->cfg.xsks_fd, &x->slot);
	ring_unmap(&x->fill);
	ring_unmap(&x->comp);
	ring_unmap(&x->rx);
	ring_unmap(&x->tx);
	if (x->fd >= 0)
		close(x->fd);
	x->fd = -1;
}

static int xport_open(struct eng_io_worker *iw, struct xport *x, int owner_fd, int zerocopy,
		      char *why, size_t whylen)
{
	struct eng_io_config   *c = &iw->io->cfg;
	struct xdp_mmap_offsets off;
	socklen_t		ol = sizeof(off);
	struct sockaddr_xdp	sa;
	uint32_t		n = c->ring;
	int			err;

	x->fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (x->fd < 0) {
		err = -errno;
		snprintf(why, whylen, "AF_XDP socket: %s (Linux 4.18+ with CONFIG_XDP_SOCKETS)",
			 strerror(errno));
		return err;
	}
	if (owner_fd < 0) {
		struct xdp_umem_reg mr;

		memset(&mr, 0, sizeof(mr));
		mr.addr	      = (uint64_t)(uintptr_t)iw->umem;
		mr.len	      = iw->umem_len;
		mr.chunk_size = ENG_FRAME_SIZE;
		mr.headroom   = 0;
		if (setsockopt(x->fd, SOL_XDP, XDP_UMEM_REG, &mr, sizeof(mr))) {
			err = -errno;
			snprintf(why, whylen,
				 "register UMEM of %zu bytes: %s (locked memory limit? ulimit -l)",
				 iw->umem_len, strerror(errno));
			return err;
		}
	}
	if (setsockopt(x->fd, SOL_XDP, XDP_UMEM_FILL_RING, &n, sizeof(n)) ||
	    setsockopt(x->fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &n, sizeof(n)) ||
	    setsockopt(x->fd, SOL_XDP, XDP_RX_RING, &n, sizeof(n)) ||
	    setsockopt(x->fd, SOL_XDP, XDP_TX_RING, &n, sizeof(n)) ||
	    getsockopt(x->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &ol)) {
		err = -errno;
		snprintf(why, whylen, "AF_XDP rings of %u descriptors: %s", n, strerror(errno));
		return err;
	}
	if ((err = ring_map(x->fd, &x->fill, &off.fr, n, sizeof(uint64_t), XDP_UMEM_PGOFF_FILL_RING,
			    1)) ||
	    (err = ring_map(x->fd, &x->comp, &off.cr, n, sizeof(uint64_t),
			    XDP_UMEM_PGOFF_COMPLETION_RING, 0)) ||
	    (err = ring_map(x->fd, &x->rx, &off.rx, n, sizeof(struct xdp_desc), XDP_PGOFF_RX_RING,
			    0)) ||
	    (err = ring_map(x->fd, &x->tx, &off.tx, n, sizeof(struct xdp_desc), XDP_PGOFF_TX_RING,
			    1))) {
		snprintf(why, whylen, "mmap AF_XDP rings: %s", strerror(-err));
		return err;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sxdp_family	 = AF_XDP;
	sa.sxdp_ifindex	 = x->ifindex;
	sa.sxdp_queue_id = x->queue;
	if (owner_fd < 0) {
		sa.sxdp_flags = XDP_USE_NEED_WAKEUP | (zerocopy ? XDP_ZEROCOPY : XDP_COPY);
	} else {
		sa.sxdp_flags	       = XDP_SHARED_UMEM;
		sa.sxdp_shared_umem_fd = (uint32_t)owner_fd;
	}
	if (bind(x->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		snprintf(why, whylen, "bind AF_XDP socket to ifindex %u queue %u (%s mode%s): %s",
			 x->ifindex, x->queue, zerocopy ? "zero-copy" : "copy",
			 owner_fd < 0 ? "" : ", shared UMEM", strerror(errno));
		return err;
	}
	if (c->busy_poll_us > 0) {
		int one = 1, us = c->busy_poll_us;

#ifdef SO_PREFER_BUSY_POLL
		setsockopt(x->fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof(one));
#endif
		setsockopt(x->fd, SOL_SOCKET, SO_BUSY_POLL, &us, sizeof(us));
		(void)one;
	}
	if (c->xsks_fd >= 0 && bpf_map_update_elem(c->xsks_fd, &x->slot, &x->fd, 0)) {
		err = -errno;
		snprintf(why, whylen,
			 "register the socket of ifindex %u queue %u in the XSKMAP (slot %u): %s",
			 x->ifindex, x->queue, x->slot, strerror(errno));
		return err;
	}
	return 0;
}

static void worker_close(struct eng_io_worker *iw)
{
	for (uint32_t i = 0; i < iw->nxp; i++)
		xport_close(iw->io, &iw->xp[i]);
	iw->nxp = 0;
	if (iw->umem)
		munmap(iw->umem, iw->umem_len);
	iw->umem = NULL;
	free(iw->free);
	iw->free = NULL;
}

static int worker_open(struct eng_io_worker *iw, int zerocopy, char *why, size_t whylen)
{
	struct eng_io_config *c	    = &iw->io->cfg;
	int		      owner = -1, err;

	iw->umem_len = (size_t)iw->frames * ENG_FRAME_SIZE;
	iw->umem     = mmap(NULL, iw->umem_len, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (iw->umem == MAP_FAILED) {
		iw->umem = NULL;
		snprintf(why, whylen, "UMEM of %zu bytes: %s", iw->umem_len, strerror(errno));
		return -ENOMEM;
	}
	iw->free = malloc(sizeof(uint64_t) * iw->frames);
	if (!iw->free) {
		snprintf(why, whylen, "out of memory for the frame stack");
		return -ENOMEM;
	}
	iw->nfree = iw->frames;
	for (uint32_t i = 0; i < iw->frames; i++)
		iw->free[i] = (uint64_t)(iw->frames - 1 - i) * ENG_FRAME_SIZE;
	for (int p = 0; p < ENG_MAX_PORTS; p++)
		iw->by_port[p] = -1;
	for (uint32_t p = 0; p < c->nports; p++) {
		struct xport *x;

		if (iw->queue >= c->ports[p].queues)
			continue;
		x = &iw->xp[iw->nxp];
		memset(x, 0, sizeof(*x));
		x->fd	   = -1;
		x->port	   = (uint8_t)p;
		x->ifindex = c->ports[p].ifindex;
		x->queue   = iw->queue;
		x->slot	   = c->ports[p].xsk_base + iw->queue;
		iw->nxp++;
		err = xport_open(iw, x, owner, zerocopy, why, whylen);
		if (err)
			return err;
		if (owner < 0)
			owner = x->fd;
		iw->by_port[p]	     = (int)(iw->nxp - 1);
		iw->pfd[iw->nxp - 1] = (struct pollfd){.fd = x->fd, .events = POLLIN};
	}
	iw->zerocopy	= zerocopy;
	iw->fill_target = iw->nxp ? iw->frames / (2 * iw->nxp) : 0;
	if (iw->fill_target > c->ring)
		iw->fill_target = c->ring;
	return 0;
}

/* ---- the loop ------------------------------------------------------------------ */

static void refill(struct eng_io_worker *iw)
{
	for (uint32_t k = 0; k < iw->nxp; k++) {
		struct xport *x = &iw->xp[k];
		uint32_t      n;

		/* completions: frames the kernel sent */
		n = cons_avail(&x->comp, x->comp.size);
		for (uint32_t j = 0; j < n; j++) {
			uint64_t a =
				((uint64_t *)
					 x->comp.desc)[(x->comp.cached_cons + j) & x->comp.mask];

			iw->free[iw->nfree++] = a & ~(uint64_t)(ENG_FRAME_SIZE - 1);
		}
		if (n) {
			x->comp.cached_cons += n;
			cons_release(&x->comp);
		}
	}
	for (uint32_t k = 0; k < iw->nxp; k++) {
		struct xport *x = &iw->xp[k];
		uint32_t      have =
			x->fill.cached_prod - __atomic_load_n(x->fill.consumer, __ATOMIC_ACQUIRE);
		uint32_t want, room;

		if (have >= iw->fill_target)
			continue;
		want = iw->fill_target - have;
		if (want > iw->nfree)
			want = iw->nfree;
		room = prod_free(&x->fill, want);
		if (want > room)
			want = room;
		for (uint32_t j = 0; j < want; j++)
			((uint64_t *)x->fill.desc)[(x->fill.cached_prod + j) & x->fill.mask] =
				iw->free[--iw->nfree];
		if (want) {
			x->fill.cached_prod += want;
			prod_submit(&x->fill);
		}
	}
}

static void io_output(struct eng_worker *w, uint32_t i)
{
	struct eng_io_worker *iw = w->io;
	uint8_t		      p	 = w->v.out_port[i];

	if (p >= ENG_MAX_PORTS || iw->by_port[p] < 0) {
		/* the graph's drop node runs after output: hand it over */
		w->v.reason[i]			      = ENG_R_NO_TX_PORT;
		w->q[ENG_N_DROP][w->qn[ENG_N_DROP]++] = (uint16_t)i;
		return;
	}
	iw->txi[p][iw->txn[p]++] = (uint16_t)i;
}

static void io_drop(struct eng_worker *w, uint32_t i)
{
	struct eng_io_worker *iw = w->io;

	iw->free[iw->nfree++] = w->v.addr[i] & ~(uint64_t)(ENG_FRAME_SIZE - 1);
}

static void transmit(struct eng_io_worker *iw)
{
	struct eng_worker *w = iw->w;

	for (uint32_t p = 0; p < ENG_MAX_PORTS; p++) {
		uint32_t      n = iw->txn[p], room, j;
		struct xport *x;

		if (!n)
			continue;
		iw->txn[p] = 0;
		x	   = &iw->xp[iw->by_port[p]];
		room	   = prod_free(&x->tx, n);
		if (room > n)
			room = n;
		for (j = 0; j < room; j++) {
			uint32_t	 i = iw->txi[p][j];
			struct xdp_desc *d =
				&((struct xdp_desc *)
					  x->tx.desc)[(x->tx.cached_prod + j) & x->tx.mask];

			d->addr	   = w->v.addr[i];
			d->len	   = w->v.len[i];
			d->options = 0;
		}
		for (; j < n; j++) {
			uint32_t i = iw->txi[p][j];

			w->reasons[ENG_R_TX_FULL]++;
			iw->free[iw->nfree++] = w->v.addr[i] & ~(uint64_t)(ENG_FRAME_SIZE - 1);
		}
		if (room) {
			x->tx.cached_prod += room;
			prod_submit(&x->tx);
			x->tx_pkts += room;
		}
	}
	for (uint32_t k = 0; k < iw->nxp; k++) {
		struct xport *x = &iw->xp[k];

		/* Zero-copy: one kick, only when the driver asks. Copy mode
		 * sends in the call itself, at most a kernel batch per call (32
		 * frames before Linux 6.17's XDP_MAX_TX_SKB_BUDGET), the rest
		 * answered with EAGAIN: kick until the ring is drained (a few
		 * calls at most), else a vector's tail waits for the next loop
		 * and a full ring drops the next vector's frames (tx-full). */
		for (uint32_t kick = 0; kick < TX_KICKS_MAX; kick++) {
			if (x->tx.cached_prod ==
				    __atomic_load_n(x->tx.consumer, __ATOMIC_ACQUIRE) ||
			    (iw->zerocopy && !needs_wakeup(&x->tx)))
				break;
			x->kicks++;
			if ((sendto(x->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 &&
			     errno != EAGAIN) ||
			    iw->zerocopy)
				break;
		}
	}
}

static uint32_t receive(struct eng_io_worker *iw, uint32_t max, uint32_t start)
{
	struct eng_vec *v = &iw->w->v;
	uint32_t	n = 0;

	for (uint32_t r = 0; r < iw->nxp && n < max; r++) {
		struct xport *x	  = &iw->xp[(start + r) % iw->nxp];
		uint32_t      got = cons_avail(&x->rx, max - n);

		for (uint32_t j = 0; j < got; j++) {
			const struct xdp_desc *d =
				&((struct xdp_desc *)
					  x->rx.desc)[(x->rx.cached_cons + j) & x->rx.mask];
			uint64_t chunk = d->addr & ~(uint64_t)(ENG_FRAME_SIZE - 1);

			v->addr[n]    = d->addr;
			v->data[n]    = iw->umem + d->addr;
			v->len[n]     = (uint16_t)(d->len > 0xffff ? 0xffff : d->len);
			v->cap[n]     = (uint16_t)(chunk + ENG_FRAME_SIZE - d->addr);
			v->rx_port[n] = x->port;
			n++;
		}
		if (got) {
			x->rx.cached_cons += got;
			cons_release(&x->rx);
			x->rx_pkts += got;
		} else if (needs_wakeup(&x->fill)) {
			recvfrom(x->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		}
	}
	return n;
}

static void *io_main(void *arg)
{
	struct eng_io_worker *iw   = arg;
	struct eng_worker    *w	   = iw->w;
	struct eng	     *e	   = w->e;
	uint32_t	      idle = 0, rot = 0;
	uint64_t	      next_gc = 0;
	char		      name[16];

	snprintf(name, sizeof(name), "bpfproxy-xsk%u", iw->queue);
	prctl(PR_SET_NAME, name);
	while (!atomic_load_explicit(&iw->io->stop, memory_order_relaxed)) {
		const struct eng_table *t  = eng_enter(w);
		uint64_t		t0 = eng_ticks(), now;
		uint32_t		n;

		refill(iw);
		n = t ? receive(iw, e->cfg.vector, rot++) : 0;
		/* the input node's time: polls that brought a vector (an empty
		 * poll is counted as a call only) */
		if (n)
			w->nodes[ENG_N_INPUT].ticks += eng_ticks() - t0;
		if (!n) {
			w->nodes[ENG_N_INPUT].calls++;
			transmit(iw); /* kick what earlier vectors left in the rings */
			eng_leave(w);
			now = eng_now_ns();
			if (w->id == 0 && now >= next_gc) {
				eng_sessions_gc(&e->sessions, now,
						(e->sessions.mask + 1) / 1024 + 64);
				eng_sessions6_gc(&e->sessions6, now,
						 (e->sessions6.mask + 1) / 1024 + 64);
				next_gc = now + GC_EVERY_NS;
			}
			if (++idle < SPIN_BEFORE_PARK)
				continue;
			idle = 0;
			atomic_store(&w->offline, 1);
			poll(iw->pfd, iw->nxp, PARK_MS);
			atomic_store(&w->offline, 0);
			continue;
		}
		idle   = 0;
		now    = eng_now_ns();
		w->v.n = n;
		eng_run(w, t, now, ENG_N__MAX);
		t0 = eng_ticks();
		transmit(iw);
		w->nodes[ENG_N_OUTPUT].ticks += eng_ticks() - t0;
		eng_leave(w);
		if (w->id == 0 && now >= next_gc) {
			eng_sessions_gc(&e->sessions, now, (e->sessions.mask + 1) / 1024 + 64);
			eng_sessions6_gc(&e->sessions6, now, (e->sessions6.mask + 1) / 1024 + 64);
			next_gc = now + GC_EVERY_NS;
		}
	}
	return NULL;
}

/* ---- start, stop, figures --------------------------------------------------------- */

static void io_free(struct eng *e)
{
	struct eng_io *io = e->io;

	if (!io)
		return;
	for (uint32_t q = 0; q < io->n; q++) {
		struct eng_io_worker *iw = io->iw[q];

		if (!iw)
			continue;
		worker_close(iw);
		eng_worker_free(iw->w);
		free(iw);
	}
	e->nworkers = 0;
	memset(e->workers, 0, sizeof(e->workers));
	free(io);
	e->io = NULL;
}

void eng_io_stop(struct eng *e)
{
	struct eng_io *io = e->io;

	if (!io)
		return;
	atomic_store(&io->stop, 1);
	for (uint32_t q = 0; q < io->n; q++) {
		if (io->iw[q] && io->iw[q]->w->started)
			pthread_join(io->iw[q]->w->thread, NULL);
	}
	io_free(e);
}

int eng_io_start(struct eng *e, const struct eng_io_config *c, char *why, size_t whylen)
{
	struct eng_io *io;
	int	       err = 0;

	if (e->io) {
		snprintf(why, whylen, "the engine's I/O is running already");
		return -EBUSY;
	}
	if (!c->nports || c->nports > ENG_MAX_PORTS || !c->queues || c->queues > ENG_MAX_WORKERS ||
	    c->ring < 64 || c->ring > 16384 || (c->ring & (c->ring - 1)) ||
	    c->frames < 2 * c->ring || c->frames > (1u << 20)) {
		snprintf(why, whylen,
			 "I/O settings out of range: ports %u (1-%d), queues %u (1-%d), ring %u "
			 "(64-16384, a power "
			 "of two), frames %u (at least 2 x ring, at most %u)",
			 c->nports, ENG_MAX_PORTS, c->queues, ENG_MAX_WORKERS, c->ring, c->frames,
			 1u << 20);
		return -EINVAL;
	}
	io = calloc(1, sizeof(*io));
	if (!io) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	io->cfg = *c;
	e->io	= io;
	for (uint32_t q = 0; q < c->queues; q++) {
		struct eng_io_worker *iw = calloc(1, sizeof(*iw));

		if (!iw) {
			snprintf(why, whylen, "out of memory");
			err = -ENOMEM;
			break;
		}
		io->iw[q]  = iw;
		io->n	   = q + 1;
		iw->io	   = io;
		iw->queue  = q;
		iw->frames = c->frames;
		iw->w	   = eng_worker_new(e, q);
		if (!iw->w) {
			snprintf(why, whylen, "out of memory");
			err = -ENOMEM;
			break;
		}
		iw->w->io     = iw;
		iw->w->output = io_output;
		iw->w->drop   = io_drop;
		err	      = worker_open(iw, c->zerocopy != 0, why, whylen);
		if (err && c->zerocopy < 0) {
			/* auto: no zero-copy on this driver (veth); copy mode */
			worker_close(iw);
			err = worker_open(iw, 0, why, whylen);
		}
		if (err)
			break;
		e->workers[q] = iw->w;
		e->nworkers   = q + 1;
	}
	if (!err) {
		for (uint32_t q = 0; q < io->n; q++) {
			struct eng_worker *w = io->iw[q]->w;

			if (pthread_create(&w->thread, NULL, io_main, io->iw[q])) {
				err = -errno;
				snprintf(why, whylen, "worker thread for queue %u: %s", q,
					 strerror(errno));
				break;
			}
			w->started = 1;
		}
	}
	if (err)
		eng_io_stop(e);
	return err;
}

uint32_t eng_io_ports(struct eng *e, struct eng_io_port_state *out, uint32_t max, uint32_t *queues)
{
	struct eng_io *io = e->io;
	uint32_t       n  = 0;

	*queues = 0;
	if (!io)
		return 0;
	*queues = io->n;
	for (uint32_t p = 0; p < io->cfg.nports && n < max; p++) {
		struct eng_io_port_state *s = &out[n++];

		memset(s, 0, sizeof(*s));
		s->ifindex = io->cfg.ports[p].ifindex;
		for (uint32_t q = 0; q < io->n; q++) {
			struct eng_io_worker *iw = io->iw[q];
			struct xdp_statistics st;
			socklen_t	      sl = sizeof(st);
			struct xport	     *x;

			if (!iw || iw->by_port[p] < 0)
				continue;
			x	    = &iw->xp[iw->by_port[p]];
			s->zerocopy = iw->zerocopy;
			s->rx += x->rx_pkts;
			if (q < ENG_IO_QUEUE_STATS)
				s->rx_queue[q] = x->rx_pkts;
			s->tx += x->tx_pkts;
			s->tx_kicks += x->kicks;
			memset(&st, 0, sizeof(st));
			if (!getsockopt(x->fd, SOL_XDP, XDP_STATISTICS, &st, &sl)) {
				s->rx_dropped += st.rx_dropped + st.rx_invalid_descs;
				s->tx_invalid += st.tx_invalid_descs;
				if (sl >= sizeof(st)) {
					s->rx_ring_full += st.rx_ring_full;
					s->fill_empty += st.rx_fill_ring_empty_descs;
				}
			}
		}
	}
	return n;
}

size_t eng_io_umem_bytes(struct eng *e)
{
	size_t b = 0;

	if (!e->io)
		return 0;
	for (uint32_t q = 0; q < e->io->n; q++)
		if (e->io->iw[q])
			b += e->io->iw[q]->umem_len;
	return b;
}
