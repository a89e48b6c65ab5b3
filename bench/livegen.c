// SPDX-License-Identifier: Apache-2.0
/*
 * livegen: a fast, bounded packet generator for benchmarks, the way
 * xdp-trafficgen works. It builds one IPv4 UDP (or TCP SYN/ACK) frame and
 * runs bench/livegen-xdp.c over it with BPF_PROG_RUN in live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18+): each run is one frame, and the
 * program's XDP_TX sends it out of --iface. No syscall and no skb per
 * frame: one BPF_PROG_RUN call sends thousands.
 *
 *   nsenter --net=/run/netns/NS livegen --iface IF --dst-mac MAC --dst IP --dport N
 *       [--kind udp|syn|ack] [--src IP] [--srcs N] [--sport N] [--sports N]
 *       [--src-mac MAC] [--payload BYTES] [--count N] [--seconds S] [--rate PPS]
 *       [--batch N] [--threads N] [--obj PATH]
 *
 * Frame n is flow n: source address src + n % srcs, source port
 * sport + (n / srcs) % sports (a per-CPU counter in the program).
 *
 * --iface must be a veth (or a driver with ndo_xdp_xmit) whose peer takes
 * XDP frames: a veth's peer needs an XDP program of its own or GRO on,
 * otherwise it drops them all (livegen says so and exits 1). Frames run on
 * the calling CPU; the peer's receive runs there too, in the softirq each
 * batch raises. Pin with taskset to choose the CPU (and, on a veth with
 * several queues, the peer's RX queue: CPU % queues).
 *
 * Each BPF_PROG_RUN call has a fixed cost of 10-30 ms, mostly waiting (a
 * page pool per call): calls grow to about 100 ms of frames, and --threads
 * (default 2) calls run at once, all on the CPU livegen started on.
 *
 * Always bounded: stops after --count frames (default 1000, at most 1e9) or
 * --seconds (default 10, at most 3600), whichever comes first. Prints one
 * JSON line: {"sent":..,"seconds":..,"pps":..,"txPackets":..,"txDropped":..,
 * "stoppedBy":..}: sent = frames the program sent (XDP_TX), txPackets /
 * txDropped = the interface's counters over the run (a veth counts there
 * the frames its peer took / refused, its ring full).
 * Exit status: 0 done, 1 runtime error, 2 usage error.
 */
#define _GNU_SOURCE
#include <ifaddrs.h>
#include <libgen.h>
#include <limits.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "gen-common.h"
#include "livegen.h"

#define MAX_COUNT 1000000000ull
#define MAX_CHUNK (1u << 22)
#define MAX_THREADS 8

enum kind { K_UDP, K_SYN, K_ACK };

struct opts {
	struct gen_opts g;
	const char *obj;
	unsigned srcs, sports, batch, threads;
	enum kind kind;
};

static void __attribute__((noreturn)) usage(const char *why)
{
	fprintf(stderr,
		"livegen: %s\n"
		"usage: livegen --iface IF --dst-mac MAC --dst IP --dport N [--kind udp|syn|ack]\n"
		"               [--src IP] [--srcs N (addresses from --src)] [--sport N (default 40000)]\n"
		"               [--sports N (ports from --sport)] [--src-mac MAC] [--payload BYTES (max 1400)]\n"
		"               [--count N (default 1000, max 1e9)] [--seconds S (default 10, max 3600)]\n"
		"               [--rate PPS] [--batch N (frames per flush, 1-256, default 64)]\n"
		"               [--threads N (calls at once, 1-8, default 2; 1 with --rate)] [--obj PATH]\n",
		why);
	exit(2);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->kind = K_UDP;
	o->g.count = 1000;
	o->g.seconds = 10;
	o->g.sport = 40000;
	o->g.dport = -1;
	o->srcs = 1;
	o->sports = 1;
	o->batch = 64;
	o->threads = 2;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		char msg[200];

		if (gen_common_arg(argc, argv, &i, &o->g, MAX_COUNT, usage))
			continue;
		if (!strcmp(a, "--obj")) {
			GEN_NEED(usage, a, v, &i, msg);
			o->obj = v;
		} else if (!strcmp(a, "--srcs")) {
			GEN_NEED(usage, a, v, &i, msg);
			if (parse_uint(v, 1, 65536, &o->srcs))
				GEN_BAD(usage, a, v, msg);
		} else if (!strcmp(a, "--sports")) {
			GEN_NEED(usage, a, v, &i, msg);
			if (parse_uint(v, 1, 65536, &o->sports))
				GEN_BAD(usage, a, v, msg);
		} else if (!strcmp(a, "--batch")) {
			GEN_NEED(usage, a, v, &i, msg);
			if (parse_uint(v, 1, 256, &o->batch))
				GEN_BAD(usage, a, v, msg);
		} else if (!strcmp(a, "--threads")) {
			GEN_NEED(usage, a, v, &i, msg);
			if (parse_uint(v, 1, MAX_THREADS, &o->threads))
				GEN_BAD(usage, a, v, msg);
		} else if (!strcmp(a, "--kind")) {
			GEN_NEED(usage, a, v, &i, msg);
			if (!strcmp(v, "udp"))
				o->kind = K_UDP;
			else if (!strcmp(v, "syn"))
				o->kind = K_SYN;
			else if (!strcmp(v, "ack"))
				o->kind = K_ACK;
			else
				GEN_BAD(usage, a, v, msg);
		} else {
			snprintf(msg, sizeof(msg), "unknown option \"%s\"", a);
			usage(msg);
		}
	}
	gen_require(&o->g, usage);
	if ((unsigned)o->g.sport + o->sports - 1 > 65535) usage("--sport + --sports - 1 is over 65535");
}

/* Flow 0's frame: Ethernet + IPv4 + UDP/TCP + payload, padded to 60 bytes. */
static size_t build(uint8_t *f, const struct opts *o, struct livegen_cfg *cfg)
{
	uint8_t *ip = f + 14, *l4 = ip + 20;
	unsigned hl = o->kind == K_UDP ? 8 : 20;
	unsigned payload = o->g.payload;
	size_t l4len;
	uint16_t c;

	if (14 + 20 + hl + payload < LIVEGEN_MIN_FRAME)
		payload = LIVEGEN_MIN_FRAME - 14 - 20 - hl;
	l4len = hl + payload;
	memset(f, 0, 14 + 20 + l4len);
	gen_eth_ipv4(f, &o->g, o->kind == K_UDP ? IPPROTO_UDP : IPPROTO_TCP, o->g.src, l4len, 0);
	put16(l4, (uint16_t)o->g.sport);
	put16(l4 + 2, (uint16_t)o->g.dport);
	if (o->kind == K_UDP) {
		put16(l4 + 4, (uint16_t)l4len);
	} else {
		put32(l4 + 4, 0x1000);
		put32(l4 + 8, o->kind == K_SYN ? 0 : 0x2000);
		l4[12] = 5 << 4;
		l4[13] = o->kind == K_SYN ? 0x02 : 0x10;
		put16(l4 + 14, 64240);
	}
	for (size_t i = hl; i < l4len; i++)
		l4[i] = (uint8_t)('a' + i % 26);
	c = gen_l4_csum(f, l4len);
	put16(l4 + (o->kind == K_UDP ? 6 : 16), c);

	memcpy(cfg->tpl, f, sizeof(cfg->tpl));
	cfg->src = o->g.src;
	cfg->sport = (uint32_t)o->g.sport;
	cfg->ip_csum = (uint32_t)(ip[10] << 8 | ip[11]);
	cfg->l4_csum = c;
	cfg->l4_csum_off = o->kind == K_UDP ? 40 : 50;
	cfg->udp = o->kind == K_UDP;
	cfg->srcs = o->srcs;
	cfg->sports = o->sports;
	return 14 + 20 + l4len;
}

/* The interface's tx counters (32 bits, from getifaddrs: of this network namespace). */
static int tx_stats(const char *iface, uint32_t *packets, uint32_t *dropped)
{
	struct ifaddrs *ifs, *i;
	int found = -1;
	if (getifaddrs(&ifs))
		return -1;
	for (i = ifs; i; i = i->ifa_next) {
		if (i->ifa_addr && i->ifa_addr->sa_family == AF_PACKET && i->ifa_data && !strcmp(i->ifa_name, iface)) {
			const struct rtnl_link_stats *s = i->ifa_data;
			*packets = s->tx_packets;
			*dropped = s->tx_dropped;
			found = 0;
			break;
		}
	}
	freeifaddrs(ifs);
	return found;
}

/* cfg's offset in the object's .rodata, from its BTF */
static int cfg_offset(struct bpf_object *obj)
{
	struct btf *btf = bpf_object__btf(obj);
	int id;
	const struct btf_type *sec;
	const struct btf_var_secinfo *v;
	if (!btf)
		return -1;
	id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (id < 0)
		return -1;
	sec = btf__type_by_id(btf, id);
	v = btf_var_secinfos(sec);
	for (int i = 0; i < btf_vlen(sec); i++, v++) {
		const struct btf_type *t = btf__type_by_id(btf, v->type);
		if (!strcmp(btf__name_by_offset(btf, t->name_off), "cfg"))
			return v->size == sizeof(struct livegen_cfg) ? (int)v->offset : -1;
	}
	return -1;
}

/* What the sending threads share. */
struct shared {
	int fd;
	const uint8_t *frame;
	size_t len;
	struct xdp_md *ctx;
	const struct opts *o;
	uint64_t start, deadline;
	unsigned long long reserved; /* frames claimed by calls (atomic) */
	unsigned long long sent;     /* frames sent (atomic) */
	int stop;                    /* atomic: the first reason to stop wins */
	const char *stopped;
};

static void stop(struct shared *s, const char *why)
{
	int zero = 0;
	if (__atomic_compare_exchange_n(&s->stop, &zero, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		s->stopped = why;
}

/* One BPF_PROG_RUN call of n live frames. 0, or -1 (stopped with "error") */
static int run(struct shared *s, uint64_t n)
{
	LIBBPF_OPTS(bpf_test_run_opts, r, .data_in = s->frame, .data_size_in = (uint32_t)s->len, .ctx_in = s->ctx,
		    .ctx_size_in = sizeof(*s->ctx), .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = s->o->batch,
		    .repeat = (int)n);
	for (;;) {
		if (bpf_prog_test_run_opts(s->fd, &r) == 0)
			return 0;
		if (errno != EINTR)
			break;
	}
	fprintf(stderr, "livegen: BPF_PROG_RUN (live frames) on %s: %s (Linux 5.18+; --iface must be up)\n", s->o->g.iface,
		strerror(errno));
	stop(s, "error");
	return -1;
}

/*
 * A sending thread. Each call costs a fixed 10-30 ms besides its frames,
 * most of it waiting (the kernel sets up and tears down a page pool per
 * call): calls grow until one takes about 100 ms, and two threads (on the
 * one CPU taskset gives) keep the CPU busy while the other waits.
 */
static void *worker(void *arg)
{
	struct shared *s = arg;
	const struct opts *o = s->o;
	uint64_t chunk = 1024;

	while (!__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST)) {
		uint64_t n = chunk, t0, now = now_ns(), have;

		if (now >= s->deadline) {
			stop(s, "time");
			break;
		}
		if (o->g.rate > 0) {
			/* pace (one thread): frame k leaves no earlier than start + k / rate,
			 * 100 ms of frames a call */
			n = (uint64_t)(o->g.rate / 10) + 1;
			if (gen_pace(s->start, s->sent, o->g.rate, now, s->deadline)) {
				stop(s, "time");
				break;
			}
		}
		have = __atomic_fetch_add(&s->reserved, n, __ATOMIC_SEQ_CST);
		if (have >= o->g.count) {
			stop(s, "count");
			break;
		}
		if (n > o->g.count - have)
			n = o->g.count - have;
		t0 = now_ns();
		if (run(s, n))
			break;
		__atomic_fetch_add(&s->sent, n, __ATOMIC_SEQ_CST);
		if (o->g.rate <= 0) {
			uint64_t took = now_ns() - t0;
			if (took < 50000000ull && chunk < MAX_CHUNK)
				chunk *= 4;
			else if (took > 200000000ull && chunk > 64)
				chunk /= 2;
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct livegen_cfg cfg;
	uint8_t frame[14 + 20 + 20 + GEN_MAX_PAYLOAD + LIVEGEN_MIN_FRAME];
	char objpath[PATH_MAX];
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_map *rodata = NULL, *m;
	struct xdp_md ctx;
	struct shared sh;
	unsigned long long sent = 0;
	uint32_t tx0 = 0, drop0 = 0, tx1 = 0, drop1 = 0;
	const char *stopped = "count";
	uint64_t start;
	size_t len, rosz;
	int ifindex, fd, off, err;
	char *ro;
	double secs;

	parse_args(argc, argv, &o);
	ifindex = (int)if_nametoindex(o.g.iface);
	if (!ifindex) {
		fprintf(stderr, "livegen: interface %s: %s (is it in this network namespace?)\n", o.g.iface, strerror(errno));
		return 1;
	}
	{
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		if (s < 0) {
			fprintf(stderr, "livegen: socket for interface %s: %s\n", o.g.iface, strerror(errno));
			return 1;
		}
		err = gen_iface_defaults(s, &o.g, !o.g.have_src, "livegen", "--src");
		close(s);
		if (err)
			return 1;
	}
	if ((uint64_t)o.g.src + o.srcs - 1 > 0xffffffffull)
		usage("--src + --srcs - 1 is past 255.255.255.255");
	len = build(frame, &o, &cfg);

	if (o.obj) {
		snprintf(objpath, sizeof(objpath), "%s", o.obj);
	} else {
		char self[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n < 0) {
			fprintf(stderr, "livegen: /proc/self/exe: %s; pass --obj\n", strerror(errno));
			return 1;
		}
		self[n] = 0;
		snprintf(objpath, sizeof(objpath), "%s/livegen-xdp.o", dirname(self));
	}
	libbpf_set_print(NULL);
	obj = bpf_object__open_file(objpath, NULL);
	if (!obj) {
		fprintf(stderr, "livegen: open %s: %s (make bench-tools builds it)\n", objpath, strerror(errno));
		return 1;
	}
	bpf_object__for_each_map(m, obj)
		if (strstr(bpf_map__name(m), ".rodata"))
			rodata = m;
	off = cfg_offset(obj);
	ro = rodata ? (char *)bpf_map__initial_value(rodata, &rosz) : NULL;
	if (!ro || off < 0 || (size_t)off + sizeof(cfg) > rosz) {
		fprintf(stderr, "livegen: %s has no .rodata variable \"cfg\" of %zu bytes: rebuild it (make bench-tools)\n",
			objpath, sizeof(cfg));
		return 1;
	}
	memcpy(ro + off, &cfg, sizeof(cfg));
	err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "livegen: load %s: %s (needs CAP_BPF and CAP_NET_ADMIN)\n", objpath, strerror(-err));
		return 1;
	}
	prog = bpf_object__find_program_by_name(obj, "livegen");
	fd = prog ? bpf_program__fd(prog) : -1;
	if (fd < 0) {
		fprintf(stderr, "livegen: %s has no program \"livegen\"\n", objpath);
		return 1;
	}
	if (tx_stats(o.g.iface, &tx0, &drop0)) {
		fprintf(stderr, "livegen: no counters for %s\n", o.g.iface);
		return 1;
	}

	memset(&ctx, 0, sizeof(ctx));
	ctx.data_end = (uint32_t)len;
	ctx.ingress_ifindex = (uint32_t)ifindex;
	memset(&sh, 0, sizeof(sh));
	sh.fd = fd;
	sh.frame = frame;
	sh.len = len;
	sh.ctx = &ctx;
	sh.o = &o;
	sh.stopped = "count";
	start = now_ns();
	sh.start = start;
	sh.deadline = start + (uint64_t)(o.g.seconds * 1e9);

	/* the first call, alone: does the peer take XDP frames at all? (a veth
	 * counts, in its tx_packets, the frames its peer received) */
	{
		uint64_t n = o.g.rate > 0 ? (uint64_t)(o.g.rate / 10) + 1 : 1024;
		struct timespec ts = { 0, 50000000 };
		if (n > o.g.count)
			n = o.g.count;
		if (run(&sh, n) == 0) {
			sh.reserved = sh.sent = n;
			if (tx_stats(o.g.iface, &tx1, &drop1) == 0 && tx1 == tx0)
				nanosleep(&ts, NULL);
			if (tx_stats(o.g.iface, &tx1, &drop1) == 0 && tx1 == tx0) {
				fprintf(stderr,
					"livegen: %s: none of the first %llu frames reached its peer: the peer takes no XDP "
					"frames (a veth's peer needs an XDP program of its own, or GRO on)\n",
					o.g.iface, (unsigned long long)n);
				stop(&sh, "error");
			}
		}
	}
	if (!sh.stop) {
		unsigned nt = o.g.rate > 0 ? 1 : o.threads;
		pthread_t th[MAX_THREADS];
		pthread_attr_t attr;
		cpu_set_t one;
		/* every thread on the CPU livegen started on: a veth queue's ring
		 * takes frames from one CPU at the pace that CPU's softirq drains it
		 * (from two CPUs at once it overflows) */
		CPU_ZERO(&one);
		CPU_SET(sched_getcpu(), &one);
		pthread_attr_init(&attr);
		pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
		for (unsigned i = 0; i < nt; i++)
			if (pthread_create(&th[i], &attr, worker, &sh)) {
				fprintf(stderr, "livegen: thread: %s\n", strerror(errno));
				stop(&sh, "error");
				nt = i;
				break;
			}
		for (unsigned i = 0; i < nt; i++)
			pthread_join(th[i], NULL);
	}
	sent = sh.sent;
	stopped = sh.stopped;
	secs = (double)(now_ns() - start) / 1e9;
	{
		/* the peer's receive may still be running in a softirq */
		struct timespec ts = { 0, 20000000 };
		nanosleep(&ts, NULL);
	}
	tx_stats(o.g.iface, &tx1, &drop1);
	printf("{\"sent\":%llu,\"seconds\":%.6f,\"pps\":%.0f,\"txPackets\":%u,\"txDropped\":%u,\"iface\":\"%s\","
	       "\"stoppedBy\":\"%s\",\"srcs\":%u,\"sports\":%u,\"frameBytes\":%zu}\n",
	       sent, secs, secs > 0 ? (double)sent / secs : 0.0, tx1 - tx0, drop1 - drop0, o.g.iface, stopped, o.srcs,
	       o.sports, len);
	bpf_object__close(obj);
	return strcmp(stopped, "error") ? 0 : 1;
}
