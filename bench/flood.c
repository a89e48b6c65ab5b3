// SPDX-License-Identifier: Apache-2.0
/*
 * flood: a bounded SYN / ACK / RST / UDP flood generator for lab tests and
 * benchmarks. Writes whole Ethernet frames to one interface through an
 * AF_PACKET socket, with correct IPv4 and TCP/UDP checksums, optionally from
 * random (spoofed) source addresses and ports in a CIDR. Meant to run inside
 * a network namespace:
 *
 *   ip netns exec NS flood --iface IF --dst-mac MAC --dst IP --dport N
 *       [--kind syn|ack|rst|udp] [--count N] [--seconds S] [--rate PPS]
 *       [--src IP | --spoof-cidr CIDR] [--sport N] [--src-mac MAC]
 *       [--payload BYTES] [--seed N] [--bad-csum] [--qdisc-bypass]
 *
 * Always bounded: stops after --count frames (default 1000, at most 10M) or
 * --seconds (default 10, at most 3600), whichever comes first. Prints one
 * JSON line: {"sent":..,"errors":..,"seconds":..,"pps":..,...}.
 * Exit status: 0 done, 1 runtime error, 2 usage error.
 */
#define _GNU_SOURCE
#include <linux/if_packet.h>
#include <unistd.h>
#include "gen-common.h"

#define MAX_COUNT 10000000ull

enum kind { K_SYN, K_ACK, K_RST, K_UDP };

struct opts {
	struct gen_opts g; /* g.sport -1: random */
	uint32_t cidr_base, cidr_mask;
	int have_cidr;
	enum kind kind;
	uint64_t seed;
	int bad_csum, qdisc_bypass;
};

static void __attribute__((noreturn)) usage(const char *why)
{
	fprintf(stderr,
		"flood: %s\n"
		"usage: flood --iface IF --dst-mac MAC --dst IP --dport N [--kind syn|ack|rst|udp]\n"
		"             [--count N (default 1000, max 10000000)] [--seconds S (default 10, max 3600)]\n"
		"             [--rate PPS] [--src IP | --spoof-cidr CIDR] [--sport N] [--src-mac MAC]\n"
		"             [--payload BYTES (max 1400)] [--seed N] [--bad-csum] [--qdisc-bypass]\n",
		why);
	exit(2);
}

/* xorshift64*: fast, seeded, not cryptographic */
static uint64_t rng_state;
static uint32_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static int parse_cidr(const char *s, uint32_t *base, uint32_t *mask)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	char *end;
	long len;

	if (!slash || (size_t)(slash - s) >= sizeof(buf))
		return -1;
	memcpy(buf, s, slash - s);
	buf[slash - s] = 0;
	len = strtol(slash + 1, &end, 10);
	if (*end || end == slash + 1 || len < 0 || len > 32 || parse_ip(buf, base))
		return -1;
	*mask = len == 0 ? 0 : 0xffffffffu << (32 - len);
	*base &= *mask;
	return 0;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->kind = K_SYN;
	o->g.count = 1000;
	o->g.seconds = 10;
	o->g.sport = -1;
	o->g.dport = -1;
	o->seed = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		char msg[160];

		if (gen_common_arg(argc, argv, &i, &o->g, MAX_COUNT, usage))
			continue;
		if (!strcmp(a, "--spoof-cidr")) {
			GEN_NEED(usage, a, v, &i, msg);
			if (parse_cidr(v, &o->cidr_base, &o->cidr_mask))
				GEN_BAD(usage, a, v, msg);
			o->have_cidr = 1;
		} else if (!strcmp(a, "--seed")) {
			char *end;
			GEN_NEED(usage, a, v, &i, msg);
			errno = 0;
			o->seed = strtoull(v, &end, 0);
			if (!*v || *end || errno)
				GEN_BAD(usage, a, v, msg);
		} else if (!strcmp(a, "--kind")) {
			GEN_NEED(usage, a, v, &i, msg);
			if (!strcmp(v, "syn"))
				o->kind = K_SYN;
			else if (!strcmp(v, "ack"))
				o->kind = K_ACK;
			else if (!strcmp(v, "rst"))
				o->kind = K_RST;
			else if (!strcmp(v, "udp"))
				o->kind = K_UDP;
			else
				GEN_BAD(usage, a, v, msg);
		} else if (!strcmp(a, "--bad-csum")) {
			o->bad_csum = 1;
		} else if (!strcmp(a, "--qdisc-bypass")) {
			o->qdisc_bypass = 1;
		} else {
			snprintf(msg, sizeof(msg), "unknown option \"%s\"", a);
			usage(msg);
		}
	}
	gen_require(&o->g, usage);
	if (o->g.have_src && o->have_cidr) usage("--src and --spoof-cidr exclude each other");
	if (!o->seed) o->seed = 0x9e3779b97f4a7c15ull;
}

/* Fill in one frame: Ethernet + IPv4 + TCP/UDP (+ payload). Returns its length. */
static size_t build(uint8_t *f, const struct opts *o, uint32_t src, uint16_t sport, uint16_t id)
{
	uint8_t *l4 = f + 14 + 20;
	size_t hl = o->kind == K_UDP ? 8 : 20, l4len = hl + o->g.payload;
	uint16_t c;

	gen_eth_ipv4(f, &o->g, o->kind == K_UDP ? IPPROTO_UDP : IPPROTO_TCP, src, l4len, id);
	memset(l4, 0, l4len);
	put16(l4, sport);
	put16(l4 + 2, (uint16_t)o->g.dport);
	if (o->kind == K_UDP) {
		put16(l4 + 4, (uint16_t)l4len);
	} else {
		put32(l4 + 4, rnd());                           /* seq */
		put32(l4 + 8, o->kind == K_SYN ? 0 : rnd());    /* ack */
		l4[12] = 5 << 4;
		l4[13] = o->kind == K_SYN ? 0x02 : o->kind == K_ACK ? 0x10 : 0x04;
		put16(l4 + 14, 64240);
	}
	for (size_t i = hl; i < l4len; i++)
		l4[i] = (uint8_t)('a' + i % 26);
	c = gen_l4_csum(f, l4len);
	if (o->bad_csum)
		c ^= 0x5a5a;
	put16(l4 + (o->kind == K_UDP ? 6 : 16), c);
	return 14 + 20 + l4len;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct ifreq ifr;
	struct sockaddr_ll sll;
	uint8_t frame[14 + 20 + 20 + GEN_MAX_PAYLOAD];
	unsigned long long sent = 0, errors = 0;
	int fd, last_errno = 0;
	const char *stopped = "count";
	uint64_t start, deadline, now;
	double secs;

	parse_args(argc, argv, &o);
	rng_state = o.seed;

	fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
	if (fd < 0) {
		fprintf(stderr, "flood: AF_PACKET socket: %s (needs CAP_NET_RAW)\n", strerror(errno));
		return 1;
	}
	memset(&ifr, 0, sizeof(ifr));
	if (strlen(o.g.iface) >= sizeof(ifr.ifr_name)) usage("--iface name too long");
	strcpy(ifr.ifr_name, o.g.iface);
	if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
		fprintf(stderr, "flood: interface %s: %s (is it in this network namespace?)\n", o.g.iface, strerror(errno));
		return 1;
	}
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_IP);
	sll.sll_ifindex = ifr.ifr_ifindex;
	sll.sll_halen = 6;
	memcpy(sll.sll_addr, o.g.dst_mac, 6);
	if (gen_iface_defaults(fd, &o.g, !o.g.have_src && !o.have_cidr, "flood", "--src or --spoof-cidr"))
		return 1;
	if (o.qdisc_bypass) {
		int one = 1;
		if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0) {
			fprintf(stderr, "flood: PACKET_QDISC_BYPASS: %s\n", strerror(errno));
			return 1;
		}
	}
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		fprintf(stderr, "flood: bind to %s: %s\n", o.g.iface, strerror(errno));
		return 1;
	}

	start = now_ns();
	deadline = start + (uint64_t)(o.g.seconds * 1e9);
	now = start;
	while (sent < o.g.count) {
		uint32_t src = o.have_cidr ? (o.cidr_base | (rnd() & ~o.cidr_mask)) : o.g.src;
		uint16_t sport = o.g.sport >= 0 ? (uint16_t)o.g.sport : (uint16_t)(1024 + rnd() % (65536 - 1024));
		size_t len;

		if ((sent & 63) == 0 || o.g.rate > 0) {
			now = now_ns();
			if (now >= deadline) {
				stopped = "time";
				break;
			}
		}
		/* pace: frame n leaves no earlier than start + n / rate */
		if (o.g.rate > 0 && gen_pace(start, sent, o.g.rate, now, deadline)) {
			stopped = "time";
			break;
		}
		len = build(frame, &o, src, sport, (uint16_t)rnd());
		if (send(fd, frame, len, 0) == (ssize_t)len) {
			sent++;
		} else {
			errors++;
			last_errno = errno;
			if (errno == ENOBUFS || errno == EAGAIN) {
				struct timespec ts = { 0, 50000 };
				nanosleep(&ts, NULL); /* queue full: let it drain */
			} else if (errno != EINTR) {
				fprintf(stderr, "flood: send on %s: %s\n", o.g.iface, strerror(errno));
				stopped = "error";
				break;
			}
		}
	}
	secs = (double)(now_ns() - start) / 1e9;
	printf("{\"sent\":%llu,\"errors\":%llu,\"seconds\":%.6f,\"pps\":%.0f,\"kind\":\"%s\",\"iface\":\"%s\","
	       "\"stoppedBy\":\"%s\",\"lastError\":\"%s\",\"seed\":\"%llu\"}\n",
	       sent, errors, secs, secs > 0 ? (double)sent / secs : 0.0,
	       o.kind == K_SYN ? "syn" : o.kind == K_ACK ? "ack" : o.kind == K_RST ? "rst" : "udp",
	       o.g.iface, stopped, last_errno ? strerror(last_errno) : "",
	       (unsigned long long)o.seed);
	close(fd);
	return errors && !sent ? 1 : 0;
}
