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
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
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
#include <unistd.h>

#define MAX_COUNT 10000000ull
#define MAX_SECONDS 3600.0
#define MAX_PAYLOAD 1400

enum kind { K_SYN, K_ACK, K_RST, K_UDP };

struct opts {
	const char *iface;
	uint8_t dst_mac[6], src_mac[6];
	int have_dst_mac, have_src_mac;
	uint32_t dst, src;        /* host order */
	int have_dst, have_src;
	uint32_t cidr_base, cidr_mask;
	int have_cidr;
	int dport, sport;         /* sport -1: random */
	enum kind kind;
	unsigned long long count;
	double seconds, rate;
	unsigned payload;
	uint64_t seed;
	int bad_csum, qdisc_bypass;
};

static void usage(const char *why)
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

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
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

static int parse_mac(const char *s, uint8_t m[6])
{
	unsigned v[6];
	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
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
	o->kind = K_SYN;
	o->count = 1000;
	o->seconds = 10;
	o->sport = -1;
	o->dport = -1;
	o->seed = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		double d;
		char msg[160];

#define NEED() do { if (!v) { snprintf(msg, sizeof(msg), "%s needs a value", a); usage(msg); } i++; } while (0)
#define BAD() do { snprintf(msg, sizeof(msg), "bad value for %s: \"%s\"", a, v); usage(msg); } while (0)
		if (!strcmp(a, "--iface")) {
			NEED();
			o->iface = v;
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
			o->have_dst = 1;
		} else if (!strcmp(a, "--src")) {
			NEED();
			if (parse_ip(v, &o->src)) BAD();
			o->have_src = 1;
		} else if (!strcmp(a, "--spoof-cidr")) {
			NEED();
			if (parse_cidr(v, &o->cidr_base, &o->cidr_mask)) BAD();
			o->have_cidr = 1;
		} else if (!strcmp(a, "--dport")) {
			NEED();
			if (parse_num(v, 0, 65535, &d)) BAD();
			o->dport = (int)d;
		} else if (!strcmp(a, "--sport")) {
			NEED();
			if (parse_num(v, 0, 65535, &d)) BAD();
			o->sport = (int)d;
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
		} else if (!strcmp(a, "--payload")) {
			NEED();
			if (parse_num(v, 0, MAX_PAYLOAD, &d)) BAD();
			o->payload = (unsigned)d;
		} else if (!strcmp(a, "--seed")) {
			char *end;
			NEED();
			errno = 0;
			o->seed = strtoull(v, &end, 0);
			if (!*v || *end || errno) BAD();
		} else if (!strcmp(a, "--kind")) {
			NEED();
			if (!strcmp(v, "syn")) o->kind = K_SYN;
			else if (!strcmp(v, "ack")) o->kind = K_ACK;
			else if (!strcmp(v, "rst")) o->kind = K_RST;
			else if (!strcmp(v, "udp")) o->kind = K_UDP;
			else BAD();
		} else if (!strcmp(a, "--bad-csum")) {
			o->bad_csum = 1;
		} else if (!strcmp(a, "--qdisc-bypass")) {
			o->qdisc_bypass = 1;
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
	if (!o->have_dst) usage("--dst is required");
	if (o->dport < 0) usage("--dport is required");
	if (o->have_src && o->have_cidr) usage("--src and --spoof-cidr exclude each other");
	if (!o->seed) o->seed = 0x9e3779b97f4a7c15ull;
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

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }

/* Fill in one frame: Ethernet + IPv4 + TCP/UDP (+ payload). Returns its length. */
static size_t build(uint8_t *f, const struct opts *o, uint32_t src, uint16_t sport, uint16_t id)
{
	uint8_t *ip = f + 14, *l4 = ip + 20;
	size_t l4len = (o->kind == K_UDP ? 8 : 20) + o->payload;
	uint32_t sum;
	uint8_t pseudo[12];

	memcpy(f, o->dst_mac, 6);
	memcpy(f + 6, o->src_mac, 6);
	put16(f + 12, ETHERTYPE_IP);

	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + l4len));
	put16(ip + 4, id);
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = o->kind == K_UDP ? IPPROTO_UDP : IPPROTO_TCP;
	put32(ip + 12, src);
	put32(ip + 16, o->dst);
	put16(ip + 10, csum_fold(csum_add(0, ip, 20)));

	memset(l4, 0, l4len);
	put16(l4, sport);
	put16(l4 + 2, (uint16_t)o->dport);
	if (o->kind == K_UDP) {
		put16(l4 + 4, (uint16_t)l4len);
	} else {
		put32(l4 + 4, rnd());                           /* seq */
		put32(l4 + 8, o->kind == K_SYN ? 0 : rnd());    /* ack */
		l4[12] = 5 << 4;
		l4[13] = o->kind == K_SYN ? 0x02 : o->kind == K_ACK ? 0x10 : 0x04;
		put16(l4 + 14, 64240);
	}
	for (size_t i = (o->kind == K_UDP ? 8 : 20); i < l4len; i++)
		l4[i] = (uint8_t)('a' + i % 26);

	put32(pseudo, src);
	put32(pseudo + 4, o->dst);
	pseudo[8] = 0;
	pseudo[9] = ip[9];
	put16(pseudo + 10, (uint16_t)l4len);
	sum = csum_add(csum_add(0, pseudo, sizeof(pseudo)), l4, l4len);
	{
		uint16_t c = csum_fold(sum);
		if (o->kind == K_UDP && c == 0)
			c = 0xffff; /* 0 means "no checksum" for UDP */
		if (o->bad_csum)
			c ^= 0x5a5a;
		put16(l4 + (o->kind == K_UDP ? 6 : 16), c);
	}
	return 14 + 20 + l4len;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct ifreq ifr;
	struct sockaddr_ll sll;
	uint8_t frame[14 + 20 + 20 + MAX_PAYLOAD];
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
	if (strlen(o.iface) >= sizeof(ifr.ifr_name)) usage("--iface name too long");
	strcpy(ifr.ifr_name, o.iface);
	if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
		fprintf(stderr, "flood: interface %s: %s (is it in this network namespace?)\n", o.iface, strerror(errno));
		return 1;
	}
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_IP);
	sll.sll_ifindex = ifr.ifr_ifindex;
	sll.sll_halen = 6;
	memcpy(sll.sll_addr, o.dst_mac, 6);
	if (!o.have_src_mac) {
		if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
			fprintf(stderr, "flood: MAC of %s: %s; pass --src-mac\n", o.iface, strerror(errno));
			return 1;
		}
		memcpy(o.src_mac, ifr.ifr_hwaddr.sa_data, 6);
	}
	if (!o.have_src && !o.have_cidr) {
		struct ifreq ar;
		memset(&ar, 0, sizeof(ar));
		strcpy(ar.ifr_name, o.iface);
		ar.ifr_addr.sa_family = AF_INET;
		if (ioctl(fd, SIOCGIFADDR, &ar) < 0) {
			fprintf(stderr, "flood: %s has no IPv4 address (%s); pass --src or --spoof-cidr\n", o.iface, strerror(errno));
			return 1;
		}
		o.src = ntohl(((struct sockaddr_in *)&ar.ifr_addr)->sin_addr.s_addr);
	}
	if (o.qdisc_bypass) {
		int one = 1;
		if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0) {
			fprintf(stderr, "flood: PACKET_QDISC_BYPASS: %s\n", strerror(errno));
			return 1;
		}
	}
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		fprintf(stderr, "flood: bind to %s: %s\n", o.iface, strerror(errno));
		return 1;
	}

	start = now_ns();
	deadline = start + (uint64_t)(o.seconds * 1e9);
	now = start;
	while (sent < o.count) {
		uint32_t src = o.have_cidr ? (o.cidr_base | (rnd() & ~o.cidr_mask)) : o.src;
		uint16_t sport = o.sport >= 0 ? (uint16_t)o.sport : (uint16_t)(1024 + rnd() % (65536 - 1024));
		size_t len;

		if ((sent & 63) == 0 || o.rate > 0) {
			now = now_ns();
			if (now >= deadline) {
				stopped = "time";
				break;
			}
		}
		if (o.rate > 0) {
			/* pace: frame n leaves no earlier than start + n / rate */
			uint64_t due = start + (uint64_t)((double)sent * 1e9 / o.rate);
			if (due > now) {
				uint64_t wait = due - now;
				struct timespec ts;
				if (due > deadline) {
					stopped = "time";
					break;
				}
				ts.tv_sec = wait / 1000000000ull;
				ts.tv_nsec = wait % 1000000000ull;
				nanosleep(&ts, NULL);
			}
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
				fprintf(stderr, "flood: send on %s: %s\n", o.iface, strerror(errno));
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
	       o.iface, stopped, last_errno ? strerror(last_errno) : "",
	       (unsigned long long)o.seed);
	close(fd);
	return errors && !sent ? 1 : 0;
}
