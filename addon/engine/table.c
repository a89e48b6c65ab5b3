/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's desired state: a binary blob the agent encodes
 * (src/dataplane/afxdp/table.ts, same layout) parsed into an immutable
 * struct eng_table with hash indexes. Nothing in the blob is trusted:
 * every count, offset and reference is checked before use, and a blob that
 * fails a check is refused whole (the table in force stays).
 *
 * Layout (little-endian; addresses as on the wire):
 *   header, 128 bytes:
 *     0 u32 magic "BPXE"   4 u16 version (3)   6 u16 header bytes (128)
 *     8 u32 generation    12 u32 ports        16 u32 node addresses
 *    20 u32 frontends     24 u32 backends     28 u32 neighbours
 *    32 u16 snat port min 34 u16 snat port max 36 u8[4] hairpin address
 *    40 u64 ns: tcp syn-sent, 48 established, 56 fins-seen, 64 rst-seen, 72 udp
 *    80 u32 total bytes   84 u32 Maglev entries   88 u32 Maglev seed   92..95 zero
 *    96 u32 IPv6 node addresses   100 u32 IPv6 frontends   104 u32 IPv6 backends
 *   108 u32 IPv6 neighbours       112 u8[16] IPv6 hairpin address (:: = none)
 *   ports       32 bytes: u32 ifindex, u32 flags, u8 mac[6], u8 pad[2], char name[16]
 *   addresses    4 bytes: u8 addr[4]
 *   frontends   32 bytes: u8 addr[4], u16 port, u8 proto, u8 flags, u32 svc id,
 *                         u32 affinity s, u32 first backend, u16 cluster count,
 *                         u16 local count, u32 Maglev start, u16 Maglev M (cluster),
 *                         u16 Maglev M (local)
 *   backends     8 bytes: u8 addr[4], u16 port, u8 flags, u8 pad
 *   neighbours  16 bytes: u8 addr[4], u8 snat addr[4], u8 port, u8 mac[6], u8 pad
 *   Maglev       2 bytes: u16 ordinal in its set (src/model/maglev.ts tables,
 *                         a frontend's cluster table then its local one)
 *   IPv6 addresses 16 bytes: u8 addr[16]
 *   IPv6 frontends 48 bytes: u8 addr[16], then a frontend record (32 bytes)
 *                         whose address is 0 (its Maglev and backend
 *                         references are into the Maglev entries above and
 *                         the IPv6 backends)
 *   IPv6 backends  20 bytes: u8 addr[16], u16 port, u8 flags, u8 pad
 *   IPv6 neighbours 40 bytes: u8 addr[16], u8 snat addr[16] (:: = none), u8 port,
 *                         u8 mac[6], u8 pad
 * Ports and frontend/backend ports are in host order in the blob and kept
 * in network order in the table.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define TABLE_MAGIC   0x45585042u /* "BPXE" */
#define TABLE_VERSION 3
#define HDR_BYTES     128
#define PORT_BYTES    32
#define ADDR_BYTES    4
#define FE_BYTES      32
#define BE_BYTES      8
#define NEIGH_BYTES   16
#define MAGLEV_BYTES  2
#define ADDR6_BYTES   16
#define FE6_BYTES     48
#define BE6_BYTES     20
#define NEIGH6_BYTES  40

#define MAX_ADDRS     4096u
#define MAX_FES	      (1u << 22)
#define MAX_BES	      (1u << 24)
#define MAX_NEIGH     (1u << 22)
#define MAX_MAGLEV    (1u << 26)

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32);
}
static uint32_t rdaddr(const uint8_t *p)
{
	uint32_t a;

	memcpy(&a, p, 4);
	return a;
}

static void fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

static uint32_t pow2_at_least(uint64_t n)
{
	uint32_t c = 16;

	while (c < n && c < (1u << 31))
		c <<= 1;
	return c;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static const char *ip_str(uint32_t a, char *buf)
{
	struct in_addr in = {.s_addr = a};

	inet_ntop(AF_INET, &in, buf, INET_ADDRSTRLEN);
	return buf;
}

void eng_table_free(struct eng_table *t)
{
	if (!t)
		return;
	free(t->addrs);
	free(t->fes);
	free(t->fe_hash);
	free(t->bes);
	free(t->neigh);
	free(t->neigh_hash);
	free(t->maglev);
	free(t->addrs6);
	free(t->fes6);
	free(t->fe6_hash);
	free(t->bes6);
	free(t->neigh6);
	free(t->neigh6_hash);
	free(t);
}

static const char *ip6_str(const eng_ip6 *a, char *buf)
{
	inet_ntop(AF_INET6, a, buf, INET6_ADDRSTRLEN);
	return buf;
}

static int cmp_ip6(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

/* A frontend record's fields (32 bytes at p; the address is the caller's). */
static void fe_fields(struct eng_frontend *f, const uint8_t *p)
{
	f->port		  = htons(rd16(p + 4));
	f->proto	  = p[6];
	f->flags	  = p[7];
	f->svc_id	  = rd32(p + 8);
	f->affinity_s	  = rd32(p + 12);
	f->be_start	  = rd32(p + 16);
	f->cluster_count  = rd16(p + 20);
	f->local_count	  = rd16(p + 22);
	f->maglev_start	  = rd32(p + 24);
	f->maglev_m	  = rd16(p + 28);
	f->maglev_m_local = rd16(p + 30);
}

/* Whether a frontend's references hold (nbe backends of its family,
 * nmaglev Maglev entries); *what says which does not. */
static int fe_consistent(const struct eng_frontend *f, int nodeport_addr, uint32_t nbe,
			 uint32_t nmaglev, const uint16_t *maglev, const char **what)
{
	if ((f->proto != 6 && f->proto != 17) || !f->port || (f->flags & ~0x1f) ||
	    (uint64_t)f->be_start + f->cluster_count + f->local_count > nbe ||
	    nodeport_addr != !!(f->flags & ENG_FE_F_NODEPORT) || f->affinity_s > 86400) {
		*what = "protocol, port, flags, backend range or affinity";
		return 0;
	}
	if ((f->flags & ENG_FE_F_MAGLEV)
		    ? (f->maglev_m < f->cluster_count || f->maglev_m_local < f->local_count ||
		       (f->cluster_count && !f->maglev_m) ||
		       (f->local_count && !f->maglev_m_local) ||
		       (uint64_t)f->maglev_start + f->maglev_m + f->maglev_m_local > nmaglev)
		    : (f->maglev_start || f->maglev_m || f->maglev_m_local)) {
		*what = "Maglev table sizes or place";
		return 0;
	}
	if (f->flags & ENG_FE_F_MAGLEV) {
		for (uint32_t j = 0; j < (uint32_t)f->maglev_m + f->maglev_m_local; j++) {
			uint32_t n = j < f->maglev_m ? f->cluster_count : f->local_count;

			if (maglev[f->maglev_start + j] >= n) {
				*what = "a Maglev entry naming a backend outside its set";
				return 0;
			}
		}
	}
	return 1;
}

/* The IPv6 sections (at p, their sizes checked by the caller). */
static int parse6(struct eng_table *t, const uint8_t *p, uint32_t naddrs6, uint32_t nfe6,
		  uint32_t nbe6, uint32_t nneigh6, char *why, size_t whylen)
{
	char a1[INET6_ADDRSTRLEN];

	t->naddrs6 = naddrs6;
	t->addrs6  = malloc((naddrs6 ? naddrs6 : 1) * sizeof(eng_ip6));
	if (!t->addrs6)
		goto oom;
	for (uint32_t i = 0; i < naddrs6; i++, p += ADDR6_BYTES) {
		memcpy(&t->addrs6[i], p, 16);
		if (eng_ip6_zero(&t->addrs6[i])) {
			fail(why, whylen, "IPv6 node address %u is ::", i);
			return -1;
		}
	}
	qsort(t->addrs6, naddrs6, sizeof(eng_ip6), cmp_ip6);

	t->nfe6	    = nfe6;
	t->fes6	    = calloc(nfe6 ? nfe6 : 1, sizeof(*t->fes6));
	t->fe6_mask = pow2_at_least((uint64_t)nfe6 * 2) - 1;
	t->fe6_hash = calloc((size_t)t->fe6_mask + 1, sizeof(uint32_t));
	if (!t->fes6 || !t->fe6_hash)
		goto oom;
	for (uint32_t i = 0; i < nfe6; i++, p += FE6_BYTES) {
		struct eng_frontend6 *f = &t->fes6[i];
		const char	     *what;
		uint32_t	      h;

		memcpy(&f->addr, p, 16);
		fe_fields(&f->f, p + 16);
		if (rdaddr(p + 16) ||
		    !fe_consistent(&f->f, eng_ip6_zero(&f->addr), nbe6, t->nmaglev, t->maglev,
				   &what)) {
			fail(why, whylen,
			     "IPv6 frontend %u ([%s]:%u proto %u, flags 0x%x, backends %u+%u+%u of "
			     "%u): %s inconsistent",
			     i, ip6_str(&f->addr, a1), ntohs(f->f.port), f->f.proto, f->f.flags,
			     f->f.be_start, f->f.cluster_count, f->f.local_count, nbe6,
			     rdaddr(p + 16) ? "the record's IPv4 address field is set:" : what);
			return -1;
		}
		if (eng_fe6_lookup_exact(t, &f->addr, f->f.port, f->f.proto)) {
			fail(why, whylen, "IPv6 frontend [%s]:%u proto %u is listed twice",
			     ip6_str(&f->addr, a1), ntohs(f->f.port), f->f.proto);
			return -1;
		}
		h = eng_fe6_hash(&f->addr, f->f.port, f->f.proto) & t->fe6_mask;
		while (t->fe6_hash[h])
			h = (h + 1) & t->fe6_mask;
		t->fe6_hash[h] = i + 1;
	}

	t->nbe6 = nbe6;
	t->bes6 = calloc(nbe6 ? nbe6 : 1, sizeof(*t->bes6));
	if (!t->bes6)
		goto oom;
	for (uint32_t i = 0; i < nbe6; i++, p += BE6_BYTES) {
		struct eng_backend6 *b = &t->bes6[i];

		memcpy(&b->addr, p, 16);
		b->port	 = htons(rd16(p + 16));
		b->flags = p[18];
		if (eng_ip6_zero(&b->addr) || !b->port || (b->flags & ~ENG_BE_F_LOCAL)) {
			fail(why, whylen, "IPv6 backend %u ([%s]:%u flags 0x%x) is inconsistent", i,
			     ip6_str(&b->addr, a1), ntohs(b->port), b->flags);
			return -1;
		}
	}

	t->nneigh6     = nneigh6;
	t->neigh6      = calloc(nneigh6 ? nneigh6 : 1, sizeof(*t->neigh6));
	t->neigh6_mask = pow2_at_least((uint64_t)nneigh6 * 2) - 1;
	t->neigh6_hash = calloc((size_t)t->neigh6_mask + 1, sizeof(uint32_t));
	if (!t->neigh6 || !t->neigh6_hash)
		goto oom;
	for (uint32_t i = 0; i < nneigh6; i++, p += NEIGH6_BYTES) {
		struct eng_neigh6 *n = &t->neigh6[i];
		uint32_t	   h;

		memcpy(&n->addr, p, 16);
		memcpy(&n->snat, p + 16, 16);
		n->port = p[32];
		memcpy(n->mac, p + 33, 6);
		if (eng_ip6_zero(&n->addr) || n->port >= t->nports) {
			fail(why, whylen, "IPv6 neighbour %u ([%s], port %u of %u) is inconsistent",
			     i, ip6_str(&n->addr, a1), n->port, t->nports);
			return -1;
		}
		if (eng_neigh6_lookup(t, &n->addr)) {
			fail(why, whylen, "IPv6 neighbour %s is listed twice",
			     ip6_str(&n->addr, a1));
			return -1;
		}
		h = eng_ip6_mix(&n->addr) & t->neigh6_mask;
		while (t->neigh6_hash[h])
			h = (h + 1) & t->neigh6_mask;
		t->neigh6_hash[h] = i + 1;
	}
	t->bytes += naddrs6 * sizeof(eng_ip6) + (size_t)nfe6 * sizeof(*t->fes6) +
		    ((size_t)t->fe6_mask + 1) * 4 + (size_t)nbe6 * sizeof(*t->bes6) +
		    (size_t)nneigh6 * sizeof(*t->neigh6) + ((size_t)t->neigh6_mask + 1) * 4;
	return 0;
oom:
	fail(why, whylen, "out of memory for a table of %u IPv6 frontends and %u IPv6 backends",
	     nfe6, nbe6);
	return -1;
}

struct eng_table *eng_table_parse(const uint8_t *buf, size_t len, char *why, size_t whylen)
{
	struct eng_table *t;
	uint64_t	  need;
	uint32_t	  nports, naddrs, nfe, nbe, nneigh, nmaglev, total;
	uint32_t	  naddrs6, nfe6, nbe6, nneigh6;
	const uint8_t	 *p;
	char		  a1[INET_ADDRSTRLEN];

	if (len < HDR_BYTES) {
		fail(why, whylen, "table is %zu bytes, shorter than its %d-byte header", len,
		     HDR_BYTES);
		return NULL;
	}
	if (rd32(buf) != TABLE_MAGIC) {
		fail(why, whylen, "table does not start with the magic \"BPXE\"");
		return NULL;
	}
	if (rd16(buf + 4) != TABLE_VERSION || rd16(buf + 6) != HDR_BYTES) {
		fail(why, whylen,
		     "table version %u (header %u bytes); this engine reads version %d (%d bytes)",
		     rd16(buf + 4), rd16(buf + 6), TABLE_VERSION, HDR_BYTES);
		return NULL;
	}
	nports	= rd32(buf + 12);
	naddrs	= rd32(buf + 16);
	nfe	= rd32(buf + 20);
	nbe	= rd32(buf + 24);
	nneigh	= rd32(buf + 28);
	total	= rd32(buf + 80);
	nmaglev = rd32(buf + 84);
	naddrs6 = rd32(buf + 96);
	nfe6	= rd32(buf + 100);
	nbe6	= rd32(buf + 104);
	nneigh6 = rd32(buf + 108);
	if (naddrs6 > MAX_ADDRS || nfe6 > MAX_FES || nbe6 > MAX_BES || nneigh6 > MAX_NEIGH) {
		fail(why, whylen,
		     "table IPv6 counts out of bounds: node addresses %u (max %u), frontends %u "
		     "(max %u), backends %u (max %u), neighbours %u (max %u)",
		     naddrs6, MAX_ADDRS, nfe6, MAX_FES, nbe6, MAX_BES, nneigh6, MAX_NEIGH);
		return NULL;
	}
	if (nports > ENG_MAX_PORTS || naddrs > MAX_ADDRS || nfe > MAX_FES || nbe > MAX_BES ||
	    nneigh > MAX_NEIGH || nmaglev > MAX_MAGLEV) {
		fail(why, whylen,
		     "table counts out of bounds: ports %u (max %d), node addresses %u (max %u), "
		     "frontends %u "
		     "(max %u), backends %u (max %u), neighbours %u (max %u), Maglev entries %u "
		     "(max %u)",
		     nports, ENG_MAX_PORTS, naddrs, MAX_ADDRS, nfe, MAX_FES, nbe, MAX_BES, nneigh,
		     MAX_NEIGH, nmaglev, MAX_MAGLEV);
		return NULL;
	}
	need = HDR_BYTES + (uint64_t)nports * PORT_BYTES + (uint64_t)naddrs * ADDR_BYTES +
	       (uint64_t)nfe * FE_BYTES + (uint64_t)nbe * BE_BYTES +
	       (uint64_t)nneigh * NEIGH_BYTES + (uint64_t)nmaglev * MAGLEV_BYTES +
	       (uint64_t)naddrs6 * ADDR6_BYTES + (uint64_t)nfe6 * FE6_BYTES +
	       (uint64_t)nbe6 * BE6_BYTES + (uint64_t)nneigh6 * NEIGH6_BYTES;
	if (need != len || total != len) {
		fail(why, whylen, "table is %zu bytes (header says %u); its counts make %llu", len,
		     total, (unsigned long long)need);
		return NULL;
	}
	for (int i = 92; i < 96; i++) {
		if (buf[i]) {
			fail(why, whylen, "table header byte %d is reserved and must be 0", i);
			return NULL;
		}
	}

	t = calloc(1, sizeof(*t));
	if (!t) {
		fail(why, whylen, "out of memory for the table");
		return NULL;
	}
	t->generation  = rd32(buf + 8);
	t->snat_min    = rd16(buf + 32);
	t->snat_max    = rd16(buf + 34);
	t->hairpin     = rdaddr(buf + 36);
	t->ct_syn_ns   = rd64(buf + 40);
	t->ct_est_ns   = rd64(buf + 48);
	t->ct_fin_ns   = rd64(buf + 56);
	t->ct_rst_ns   = rd64(buf + 64);
	t->ct_udp_ns   = rd64(buf + 72);
	t->maglev_seed = rd32(buf + 88);
	memcpy(&t->hairpin6, buf + 112, 16);
	if (t->snat_min == 0 || t->snat_min > t->snat_max) {
		fail(why, whylen, "SNAT port range %u-%u: ports must be 1-65535 and min <= max",
		     t->snat_min, t->snat_max);
		goto bad;
	}
	if (!t->ct_syn_ns || !t->ct_est_ns || !t->ct_fin_ns || !t->ct_rst_ns || !t->ct_udp_ns) {
		fail(why, whylen, "a conntrack timeout is 0");
		goto bad;
	}
	p = buf + HDR_BYTES;

	t->nports = nports;
	for (uint32_t i = 0; i < nports; i++, p += PORT_BYTES) {
		struct eng_port *pt = &t->ports[i];

		pt->ifindex = rd32(p);
		pt->flags   = rd32(p + 4);
		memcpy(pt->mac, p + 8, 6);
		memcpy(pt->name, p + 16, 16);
		pt->name[16] = 0;
		if (!pt->ifindex || (pt->flags & ~ENG_PORT_F_POD)) {
			fail(why, whylen,
			     "port %u (%s): ifindex %u, flags 0x%x: ifindex must be set and flags "
			     "known",
			     i, pt->name, pt->ifindex, pt->flags);
			goto bad;
		}
		for (uint32_t j = 0; j < i; j++) {
			if (t->ports[j].ifindex == pt->ifindex) {
				fail(why, whylen, "ports %u and %u are both ifindex %u", j, i,
				     pt->ifindex);
				goto bad;
			}
		}
	}

	t->naddrs = naddrs;
	t->addrs  = malloc((naddrs ? naddrs : 1) * sizeof(uint32_t));
	if (!t->addrs)
		goto oom;
	for (uint32_t i = 0; i < naddrs; i++, p += ADDR_BYTES) {
		t->addrs[i] = rdaddr(p);
		if (!t->addrs[i]) {
			fail(why, whylen, "node address %u is 0.0.0.0", i);
			goto bad;
		}
	}
	qsort(t->addrs, naddrs, sizeof(uint32_t), cmp_u32);

	t->nfe	   = nfe;
	t->fes	   = calloc(nfe ? nfe : 1, sizeof(*t->fes));
	t->fe_mask = pow2_at_least((uint64_t)nfe * 2) - 1;
	t->fe_hash = calloc((size_t)t->fe_mask + 1, sizeof(uint32_t));
	if (!t->fes || !t->fe_hash)
		goto oom;
	for (uint32_t i = 0; i < nfe; i++, p += FE_BYTES) {
		struct eng_frontend *f = &t->fes[i];
		uint32_t	     h;

		f->addr		  = rdaddr(p);
		f->port		  = htons(rd16(p + 4));
		f->proto	  = p[6];
		f->flags	  = p[7];
		f->svc_id	  = rd32(p + 8);
		f->affinity_s	  = rd32(p + 12);
		f->be_start	  = rd32(p + 16);
		f->cluster_count  = rd16(p + 20);
		f->local_count	  = rd16(p + 22);
		f->maglev_start	  = rd32(p + 24);
		f->maglev_m	  = rd16(p + 28);
		f->maglev_m_local = rd16(p + 30);
		if ((f->proto != 6 && f->proto != 17) || !f->port || (f->flags & ~0x1f) ||
		    (uint64_t)f->be_start + f->cluster_count + f->local_count > nbe ||
		    (!f->addr) != !!(f->flags & ENG_FE_F_NODEPORT) || f->affinity_s > 86400) {
			fail(why, whylen,
			     "frontend %u (%s:%u proto %u, flags 0x%x, backends %u+%u+%u of %u, "
			     "affinity %us) is "
			     "inconsistent",
			     i, ip_str(f->addr, a1), ntohs(f->port), f->proto, f->flags,
			     f->be_start, f->cluster_count, f->local_count, nbe, f->affinity_s);
			goto bad;
		}
		if ((f->flags & ENG_FE_F_MAGLEV)
			    ? (f->maglev_m < f->cluster_count ||
			       f->maglev_m_local < f->local_count ||
			       (f->cluster_count && !f->maglev_m) ||
			       (f->local_count && !f->maglev_m_local) ||
			       (uint64_t)f->maglev_start + f->maglev_m + f->maglev_m_local >
				       nmaglev)
			    : (f->maglev_start || f->maglev_m || f->maglev_m_local)) {
			fail(why, whylen,
			     "frontend %u (%s:%u proto %u): Maglev tables of %u and %u entries at "
			     "%u "
			     "(of %u) for %u and %u backends are inconsistent",
			     i, ip_str(f->addr, a1), ntohs(f->port), f->proto, f->maglev_m,
			     f->maglev_m_local, f->maglev_start, nmaglev, f->cluster_count,
			     f->local_count);
			goto bad;
		}
		if (eng_fe_lookup_exact(t, f->addr, f->port, f->proto)) {
			fail(why, whylen, "frontend %s:%u proto %u is listed twice",
			     ip_str(f->addr, a1), ntohs(f->port), f->proto);
			goto bad;
		}
		h = eng_fe_hash(f->addr, f->port, f->proto) & t->fe_mask;
		while (t->fe_hash[h])
			h = (h + 1) & t->fe_mask;
		t->fe_hash[h] = i + 1;
	}

	t->nbe = nbe;
	t->bes = calloc(nbe ? nbe : 1, sizeof(*t->bes));
	if (!t->bes)
		goto oom;
	for (uint32_t i = 0; i < nbe; i++, p += BE_BYTES) {
		struct eng_backend *b = &t->bes[i];

		b->addr	 = rdaddr(p);
		b->port	 = htons(rd16(p + 4));
		b->flags = p[6];
		if (!b->addr || !b->port || (b->flags & ~ENG_BE_F_LOCAL)) {
			fail(why, whylen, "backend %u (%s:%u flags 0x%x) is inconsistent", i,
			     ip_str(b->addr, a1), ntohs(b->port), b->flags);
			goto bad;
		}
	}

	t->nneigh     = nneigh;
	t->neigh      = calloc(nneigh ? nneigh : 1, sizeof(*t->neigh));
	t->neigh_mask = pow2_at_least((uint64_t)nneigh * 2) - 1;
	t->neigh_hash = calloc((size_t)t->neigh_mask + 1, sizeof(uint32_t));
	if (!t->neigh || !t->neigh_hash)
		goto oom;
	for (uint32_t i = 0; i < nneigh; i++, p += NEIGH_BYTES) {
		struct eng_neigh *n = &t->neigh[i];
		uint32_t	  h;

		n->addr = rdaddr(p);
		n->snat = rdaddr(p + 4);
		n->port = p[8];
		memcpy(n->mac, p + 9, 6);
		if (!n->addr || n->port >= nports) {
			fail(why, whylen, "neighbour %u (%s, port %u of %u) is inconsistent", i,
			     ip_str(n->addr, a1), n->port, nports);
			goto bad;
		}
		if (eng_neigh_lookup(t, n->addr)) {
			fail(why, whylen, "neighbour %s is listed twice", ip_str(n->addr, a1));
			goto bad;
		}
		h = eng_mix32(n->addr) & t->neigh_mask;
		while (t->neigh_hash[h])
			h = (h + 1) & t->neigh_mask;
		t->neigh_hash[h] = i + 1;
	}
	t->nmaglev = nmaglev;
	t->maglev  = malloc((nmaglev ? nmaglev : 1) * sizeof(uint16_t));
	if (!t->maglev)
		goto oom;
	for (uint32_t i = 0; i < nmaglev; i++, p += MAGLEV_BYTES)
		t->maglev[i] = rd16(p);
	/* every entry names a backend of its set: lb indexes with it unchecked */
	for (uint32_t i = 0; i < nfe; i++) {
		const struct eng_frontend *f = &t->fes[i];

		if (!(f->flags & ENG_FE_F_MAGLEV))
			continue;
		for (uint32_t j = 0; j < (uint32_t)f->maglev_m + f->maglev_m_local; j++) {
			uint32_t n = j < f->maglev_m ? f->cluster_count : f->local_count;

			if (t->maglev[f->maglev_start + j] >= n) {
				fail(why, whylen,
				     "frontend %u (%s:%u proto %u): Maglev %s table entry %u is "
				     "backend %u of %u",
				     i, ip_str(f->addr, a1), ntohs(f->port), f->proto,
				     j < f->maglev_m ? "cluster" : "local",
				     j < f->maglev_m ? j : j - f->maglev_m,
				     t->maglev[f->maglev_start + j], n);
				goto bad;
			}
		}
	}
	t->bytes = sizeof(*t) + naddrs * 4 + (size_t)nfe * sizeof(*t->fes) +
		   ((size_t)t->fe_mask + 1) * 4 + (size_t)nbe * sizeof(*t->bes) +
		   (size_t)nneigh * sizeof(*t->neigh) + ((size_t)t->neigh_mask + 1) * 4 +
		   (size_t)nmaglev * 2;
	if (parse6(t, p, naddrs6, nfe6, nbe6, nneigh6, why, whylen))
		goto bad;
	return t;

oom:
	fail(why, whylen, "out of memory for a table of %u frontends and %u backends", nfe, nbe);
bad:
	eng_table_free(t);
	return NULL;
}
