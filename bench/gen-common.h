// SPDX-License-Identifier: Apache-2.0
/*
 * What bench/flood.c and bench/livegen.c share: the options both take (the
 * interface, the addresses, the ports and the bounds: --count, --seconds,
 * --rate, --payload), the interface's own MAC and IPv4 address as defaults,
 * the Ethernet + IPv4 header and the L4 checksum of a frame, pacing to a
 * rate. Header-only: each tool is one translation unit.
 */
#ifndef BENCH_GEN_COMMON_H
#define BENCH_GEN_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#define GEN_MAX_SECONDS 3600.0
#define GEN_MAX_PAYLOAD 1400

/* The options both generators take. */
struct gen_opts {
	const char *iface;
	uint8_t dst_mac[6], src_mac[6];
	int have_dst_mac, have_src_mac;
	uint32_t dst, src; /* host order */
	int have_dst, have_src;
	int dport, sport; /* dport -1 until given */
	unsigned long long count;
	double seconds, rate; /* rate 0: as fast as it goes */
	unsigned payload;
};

/* The tool's usage message with why, then exit(2). */
typedef void (*gen_usage_fn)(const char *why) __attribute__((noreturn));

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

/* A whole number in [lo, hi]. */
static int parse_uint(const char *s, double lo, double hi, unsigned *out)
{
	double d;
	if (parse_num(s, lo, hi, &d) || d != (unsigned)d)
		return -1;
	*out = (unsigned)d;
	return 0;
}

/* Option handling: a (argv[*i]) needs a value, v, which it consumes. */
#define GEN_NEED(usage, a, v, i, msg)                                                              \
	do {                                                                                       \
		if (!(v)) {                                                                        \
			snprintf(msg, sizeof(msg), "%s needs a value", a);                          \
			usage(msg);                                                                \
		}                                                                                  \
		(*(i))++;                                                                          \
	} while (0)
#define GEN_BAD(usage, a, v, msg)                                                                  \
	do {                                                                                       \
		snprintf(msg, sizeof(msg), "bad value for %s: \"%s\"", a, v);                      \
		usage(msg);                                                                        \
	} while (0)

/*
 * argv[*i] when it is an option both tools take: parsed into g (its value
 * consumed: *i moves on), 1; else 0. --count is bounded by max_count, and
 * --seconds, --payload by GEN_MAX_SECONDS, GEN_MAX_PAYLOAD.
 */
static int gen_common_arg(int argc, char **argv, int *i, struct gen_opts *g, unsigned long long max_count,
			  gen_usage_fn usage)
{
	const char *a = argv[*i];
	const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
	double d;
	unsigned u;
	char msg[200];

	if (!strcmp(a, "--iface")) {
		GEN_NEED(usage, a, v, i, msg);
		g->iface = v;
	} else if (!strcmp(a, "--dst-mac") || !strcmp(a, "--src-mac")) {
		int dst = a[2] == 'd';
		GEN_NEED(usage, a, v, i, msg);
		if (parse_mac(v, dst ? g->dst_mac : g->src_mac))
			GEN_BAD(usage, a, v, msg);
		*(dst ? &g->have_dst_mac : &g->have_src_mac) = 1;
	} else if (!strcmp(a, "--dst") || !strcmp(a, "--src")) {
		int dst = a[2] == 'd';
		GEN_NEED(usage, a, v, i, msg);
		if (parse_ip(v, dst ? &g->dst : &g->src))
			GEN_BAD(usage, a, v, msg);
		*(dst ? &g->have_dst : &g->have_src) = 1;
	} else if (!strcmp(a, "--dport") || !strcmp(a, "--sport")) {
		GEN_NEED(usage, a, v, i, msg);
		if (parse_uint(v, 0, 65535, &u))
			GEN_BAD(usage, a, v, msg);
		*(a[2] == 'd' ? &g->dport : &g->sport) = (int)u;
	} else if (!strcmp(a, "--count")) {
		GEN_NEED(usage, a, v, i, msg);
		if (parse_num(v, 1, 1e18, &d))
			GEN_BAD(usage, a, v, msg);
		if (d > (double)max_count) {
			snprintf(msg, sizeof(msg), "--count %s is over the limit of %llu frames", v, max_count);
			usage(msg);
		}
		g->count = (unsigned long long)d;
	} else if (!strcmp(a, "--seconds")) {
		GEN_NEED(usage, a, v, i, msg);
		if (parse_num(v, 0.001, GEN_MAX_SECONDS, &d))
			GEN_BAD(usage, a, v, msg);
		g->seconds = d;
	} else if (!strcmp(a, "--rate")) {
		GEN_NEED(usage, a, v, i, msg);
		if (parse_num(v, 1, 1e9, &d))
			GEN_BAD(usage, a, v, msg);
		g->rate = d;
	} else if (!strcmp(a, "--payload")) {
		GEN_NEED(usage, a, v, i, msg);
		if (parse_uint(v, 0, GEN_MAX_PAYLOAD, &g->payload))
			GEN_BAD(usage, a, v, msg);
	} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
		usage("help");
	} else {
		return 0;
	}
	return 1;
}

/* What every run needs, after the options. */
static void gen_require(const struct gen_opts *g, gen_usage_fn usage)
{
	if (!g->iface)
		usage("--iface is required");
	if (!g->have_dst_mac)
		usage("--dst-mac is required (the next hop's MAC on --iface)");
	if (!g->have_dst)
		usage("--dst is required");
	if (g->dport < 0)
		usage("--dport is required");
}

/*
 * The interface's MAC as the source MAC and (want_src) its IPv4 address as
 * the source address, where the options gave none; fd: any socket of this
 * network namespace. 0, or -1 with the reason on stderr (src_hint: the
 * options that would do instead of the interface's address).
 */
static int gen_iface_defaults(int fd, struct gen_opts *g, int want_src, const char *tool, const char *src_hint)
{
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	if (strlen(g->iface) >= sizeof(ifr.ifr_name)) {
		fprintf(stderr, "%s: interface name %s is too long\n", tool, g->iface);
		return -1;
	}
	strcpy(ifr.ifr_name, g->iface);
	if (!g->have_src_mac) {
		if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
			fprintf(stderr, "%s: MAC of %s: %s; pass --src-mac\n", tool, g->iface, strerror(errno));
			return -1;
		}
		memcpy(g->src_mac, ifr.ifr_hwaddr.sa_data, 6);
	}
	if (want_src) {
		memset(&ifr.ifr_addr, 0, sizeof(ifr.ifr_addr));
		ifr.ifr_addr.sa_family = AF_INET;
		if (ioctl(fd, SIOCGIFADDR, &ifr) < 0) {
			fprintf(stderr, "%s: %s has no IPv4 address (%s); pass %s\n", tool, g->iface, strerror(errno),
				src_hint);
			return -1;
		}
		g->src = ntohl(((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr);
	}
	return 0;
}

/* One's complement sum over 16-bit big-endian words. */
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

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* Frame f's Ethernet and IPv4 headers (DF, TTL 64, checksum) for proto
 * from src to g->dst with l4len bytes after them. */
static void gen_eth_ipv4(uint8_t *f, const struct gen_opts *g, uint8_t proto, uint32_t src, size_t l4len,
			 uint16_t id)
{
	uint8_t *ip = f + 14;

	memcpy(f, g->dst_mac, 6);
	memcpy(f + 6, g->src_mac, 6);
	put16(f + 12, ETHERTYPE_IP);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + l4len));
	put16(ip + 4, id);
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = proto;
	put32(ip + 12, src);
	put32(ip + 16, g->dst);
	put16(ip + 10, csum_fold(csum_add(0, ip, 20)));
}

/* The TCP/UDP checksum of the l4len bytes after frame f's IPv4 header
 * (their checksum field 0), with the pseudo header; UDP's 0 is sent as
 * 0xffff (0 means "no checksum"). */
static uint16_t gen_l4_csum(const uint8_t *f, size_t l4len)
{
	const uint8_t *ip = f + 14;
	uint8_t	       pseudo[12];
	uint16_t       c;

	memcpy(pseudo, ip + 12, 8); /* source, destination */
	pseudo[8] = 0;
	pseudo[9] = ip[9];
	put16(pseudo + 10, (uint16_t)l4len);
	c = csum_fold(csum_add(csum_add(0, pseudo, sizeof(pseudo)), ip + 20, l4len));
	return ip[9] == IPPROTO_UDP && c == 0 ? 0xffff : c;
}

/* Pacing to rate: frame n leaves no earlier than start + n / rate. Sleeps
 * until then; -1 (and no sleep) when that is past the deadline. */
static int gen_pace(uint64_t start, unsigned long long n, double rate, uint64_t now, uint64_t deadline)
{
	uint64_t due = start + (uint64_t)((double)n * 1e9 / rate);
	uint64_t wait;
	struct timespec ts;

	if (due <= now)
		return 0;
	if (due > deadline)
		return -1;
	wait = due - now;
	ts.tv_sec = (time_t)(wait / 1000000000ull);
	ts.tv_nsec = (long)(wait % 1000000000ull);
	nanosleep(&ts, NULL);
	return 0;
}

#endif /* BENCH_GEN_COMMON_H */
