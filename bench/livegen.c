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
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <libgen.h>
#include <limits.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "livegen.h"

#define MAX_COUNT 1000000000ull
#define MAX_SECONDS 3600.0
#define MAX_PAYLOAD 1400
#define MAX_CHUNK (1u << 22)
#define MAX_THREADS 8

enum kind { K_UDP, K_SYN, K_ACK };

struct opts {
	const char *iface, *obj;
	uint8_t dst_mac[6], src_mac[6];
	int have_dst_mac, have_src_mac, have_src;
	uint32_t dst, src; /* host order */
	int dport, sport;
	unsigned srcs, sports, batch, threads;
	enum kind kind;
	unsigned long long count;
	double seconds, rate;
	unsigned payload;
};

static void usage(const char *why)
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

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int parse_mac(const char *s, uint8_t m[6])
{
	unsigned v[6];
	char c;
	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &c) != 6)
		return -1;
	for (int i = 0; i < 6; i++) {
		if (v[i] > 255)
			return -1;
		m[i] = (uint8_t)v[i];
	}
	return 0;
}

static int parse_ip(const char *s, uint32_t *out)
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		return -1;
	*out = ntohl(a.s_addr);
	return 0;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (!*s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->kind = K_UDP;
	o->count = 1000;
	o->seconds = 10;
	o->sport = 40000;
	o->dport = -1;
	o->srcs = 1;
	o->sports = 1;
	o->batch = 64;
	o->threads = 2;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		double d;
		char msg[200];

#define NEED() do { if (!v) { snprintf(msg, sizeof(msg), "%s needs a value", a); usage(msg); } i++; } while (0)
#define BAD() do { snprintf(msg, sizeof(msg), "bad value for %s: \"%s\"", a, v); usage(msg); } while (0)
		if (!strcmp(a, "--iface")) {
			NEED();
			o->iface = v;
		} else if (!strcmp(a, "--obj")) {
			NEED();
			o->obj = v;
		} else if (!strcmp(a, "--dst-mac")) {
			NEED();
			if (parse_mac(v, o->dst_mac)) BAD();
			o->have_dst_mac = 1;
		} else if (!strcmp(a, "--src-mac")) {
			NEED();
			if (parse_mac(v, o->src_mac)) BAD();
			o->have_src_mac = 1;
		} else if (!strcmp(a, "--dst")) {
			NEED();
			if (parse_ip(v, &o->dst)) BAD();
		} else if (!strcmp(a, "--src")) {
			NEED();
			if (parse_ip(v, &o->src)) BAD();
			o->have_src = 1;
		} else if (!strcmp(a, "--srcs")) {
			NEED();
			if (parse_num(v, 1, 65536, &d) || d != (unsigned)d) BAD();
			o->srcs = (unsigned)d;
		} else if (!strcmp(a, "--dport")) {
			NEED();
			if (parse_num(v, 0, 65535, &d) || d != (int)d) BAD();
			o->dport = (int)d;
		} else if (!strcmp(a, "--sport")) {
			NEED();
			if (parse_num(v, 0, 65535, &d) || d != (int)d) BAD();
			o->sport = (int)d;
		} else if (!strcmp(a, "--sports")) {
			NEED();
			if (parse_num(v, 1, 65536, &d) || d != (unsigned)d) BAD();
			o->sports = (unsigned)d;
		} else if (!strcmp(a, "--count")) {
			NEED();
			if (parse_num(v, 1, 1e18, &d)) BAD();
			if (d > (double)MAX_COUNT) {
				snprintf(msg, sizeof(msg), "--count %s is over the limit of %llu frames", v, MAX_COUNT);
				usage(msg);
			}
			o->count = (unsigned long long)d;
		} else if (!strcmp(a, "--seconds")) {
			NEED();
			if (parse_num(v, 0.001, MAX_SECONDS, &d)) BAD();
			o->seconds = d;
		} else if (!strcmp(a, "--rate")) {
			NEED();
			if (parse_num(v, 1, 1e9, &d)) BAD();
			o->rate = d;
		} else if (!strcmp(a, "--batch")) {
			NEED();
			if (parse_num(v, 1, 256, &d) || d != (unsigned)d) BAD();
			o->batch = (unsigned)d;
		} else if (!strcmp(a, "--threads")) {
			NEED();
			if (parse_num(v, 1, MAX_THREADS, &d) || d != (unsigned)d) BAD();
			o->threads = (unsigned)d;
		} else if (!strcmp(a, "--payload")) {
			NEED();
			if (parse_num(v, 0, MAX_PAYLOAD, &d) || d != (unsigned)d) BAD();
			o->payload = (unsigned)d;
		} else if (!strcmp(a, "--kind")) {
			NEED();
			if (!strcmp(v, "udp")) o->kind = K_UDP;
			else if (!strcmp(v, "syn")) o->kind = K_SYN;
			else if (!strcmp(v, "ack")) o->kind = K_ACK;
			else BAD();
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage("help");
		} else {
			snprintf(msg, sizeof(msg), "unknown option \"%s\"", a);
			usage(msg);
		}
#undef NEED
#undef BAD
	}
	if (!o->iface) usage("--iface is required");
	if (!o->have_dst_mac) usage("--dst-mac is required (the next hop's MAC on --iface)");
	if (!o->dst) usage("--dst is required");
	if (o->dport < 0) usage("--dport is required");
	if ((unsigned)o->sport + o->sports - 1 > 65535) usage("--sport + --sports - 1 is over 65535");
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
	size_t i;
	for (i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }

/* Flow 0's frame: Ethernet + IPv4 + UDP/TCP + payload, padded to 60 bytes. */
static size_t build(uint8_t *f, const struct opts *o, struct livegen_cfg *cfg)
{
	uint8_t *ip = f + 14, *l4 = ip + 20;
	unsigned hl = o->kind == K_UDP ? 8 : 20;
	unsigned payload = o->payload;
	size_t l4len;
	uint8_t pseudo[12];
	uint16_t c;

	if (14 + 20 + hl + payload < LIVEGEN_MIN_FRAME)
		payload = LIVEGEN_MIN_FRAME - 14 - 20 - hl;
	l4len = hl + payload;
	memset(f, 0, 14 + 20 + l4len);
	memcpy(f, o->dst_mac, 6);
	memcpy(f + 6, o->src_mac, 6);
	put16(f + 12, ETHERTYPE_IP);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + l4len));
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = o->kind == K_UDP ? IPPROTO_UDP : IPPROTO_TCP;
	put32(ip + 12, o->src);
	put32(ip + 16, o->dst);
	put16(ip + 10, csum_fold(csum_add(0, ip, 20)));
	put16(l4, (uint16_t)o->sport);
	put16(l4 + 2, (uint16_t)o->dport);
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
	put32(pseudo, o->src);
	put32(pseudo + 4, o->dst);
	pseudo[8] = 0;
	pseudo[9] = ip[9];
	put16(pseudo + 10, (uint16_t)l4len);
	c = csum_fold(csum_add(csum_add(0, pseudo, sizeof(pseudo)), l4, l4len));
	if (o->kind == K_UDP && c == 0)
		c = 0xffff;
	put16(l4 + (o->kind == K_UDP ? 6 : 16), c);

	memcpy(cfg->tpl, f, sizeof(cfg->tpl));
	cfg->src = o->src;
	cfg->sport = (uint32_t)o->sport;
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
	fprintf(stderr, "livegen: BPF_PROG_RUN (live frames) on %s: %s (Linux 5.18+; --iface must be up)\n", s->o->iface,
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
		if (o->rate > 0) {
			/* pace (one thread): frame k leaves no earlier than start + k / rate,
			 * 100 ms of frames a call */
			uint64_t due = s->start + (uint64_t)((double)s->sent * 1e9 / o->rate);
			n = (uint64_t)(o->rate / 10) + 1;
			if (due > now) {
				uint64_t wait = due - now;
				struct timespec ts = { (time_t)(wait / 1000000000ull), (long)(wait % 1000000000ull) };
				if (due > s->deadline) {
					stop(s, "time");
					break;
				}
				nanosleep(&ts, NULL);
			}
		}
		have = __atomic_fetch_add(&s->reserved, n, __ATOMIC_SEQ_CST);
		if (have >= o->count) {
			stop(s, "count");
			break;
		}
		if (n > o->count - have)
			n = o->count - have;
		t0 = now_ns();
		if (run(s, n))
			break;
		__atomic_fetch_add(&s->sent, n, __ATOMIC_SEQ_CST);
		if (o->rate <= 0) {
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
	uint8_t frame[14 + 20 + 20 + MAX_PAYLOAD + LIVEGEN_MIN_FRAME];
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
	ifindex = (int)if_nametoindex(o.iface);
	if (!ifindex) {
		fprintf(stderr, "livegen: interface %s: %s (is it in this network namespace?)\n", o.iface, strerror(errno));
		return 1;
	}
	{
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		struct ifreq ifr;
		memset(&ifr, 0, sizeof(ifr));
		if (s < 0 || strlen(o.iface) >= sizeof(ifr.ifr_name)) {
			fprintf(stderr, "livegen: socket for interface %s: %s\n", o.iface, strerror(errno));
			return 1;
		}
		strcpy(ifr.ifr_name, o.iface);
		if (!o.have_src_mac) {
			if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0) {
				fprintf(stderr, "livegen: MAC of %s: %s; pass --src-mac\n", o.iface, strerror(errno));
				return 1;
			}
			memcpy(o.src_mac, ifr.ifr_hwaddr.sa_data, 6);
		}
		if (!o.have_src) {
			ifr.ifr_addr.sa_family = AF_INET;
			if (ioctl(s, SIOCGIFADDR, &ifr) < 0) {
				fprintf(stderr, "livegen: %s has no IPv4 address (%s); pass --src\n", o.iface, strerror(errno));
				return 1;
			}
			o.src = ntohl(((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr);
		}
		close(s);
	}
	if ((uint64_t)o.src + o.srcs - 1 > 0xffffffffull)
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
	if (tx_stats(o.iface, &tx0, &drop0)) {
		fprintf(stderr, "livegen: no counters for %s\n", o.iface);
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
	sh.deadline = start + (uint64_t)(o.seconds * 1e9);

	/* the first call, alone: does the peer take XDP frames at all? (a veth
	 * counts, in its tx_packets, the frames its peer received) */
	{
		uint64_t n = o.rate > 0 ? (uint64_t)(o.rate / 10) + 1 : 1024;
		struct timespec ts = { 0, 50000000 };
		if (n > o.count)
			n = o.count;
		if (run(&sh, n) == 0) {
			sh.reserved = sh.sent = n;
			if (tx_stats(o.iface, &tx1, &drop1) == 0 && tx1 == tx0)
				nanosleep(&ts, NULL);
			if (tx_stats(o.iface, &tx1, &drop1) == 0 && tx1 == tx0) {
				fprintf(stderr,
					"livegen: %s: none of the first %llu frames reached its peer: the peer takes no XDP "
					"frames (a veth's peer needs an XDP program of its own, or GRO on)\n",
					o.iface, (unsigned long long)n);
				stop(&sh, "error");
			}
		}
	}
	if (!sh.stop) {
		unsigned nt = o.rate > 0 ? 1 : o.threads;
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
	tx_stats(o.iface, &tx1, &drop1);
	printf("{\"sent\":%llu,\"seconds\":%.6f,\"pps\":%.0f,\"txPackets\":%u,\"txDropped\":%u,\"iface\":\"%s\","
	       "\"stoppedBy\":\"%s\",\"srcs\":%u,\"sports\":%u,\"frameBytes\":%zu}\n",
	       sent, secs, secs > 0 ? (double)sent / secs : 0.0, tx1 - tx0, drop1 - drop0, o.iface, stopped, o.srcs,
	       o.sports, len);
	bpf_object__close(obj);
	return strcmp(stopped, "error") ? 0 : 1;
}
