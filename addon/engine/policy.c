/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's NetworkPolicy state (policy.h): a blob the agent encodes
 * (src/dataplane/afxdp/policy.ts, same layout) from what the BPF policy
 * maps hold, parsed into an immutable struct eng_policy and swapped in
 * RCU-style like the table (engine.c): workers load the pointer once per
 * vector; an old policy is freed once every worker has passed a quiescent
 * point. Nothing in the blob is trusted: a blob that fails a check is
 * refused whole (the policy in force stays).
 *
 * Layout (little-endian):
 *   header, 40 bytes:
 *     0 u32 magic "BPXP"   4 u16 version (2)   6 u16 header bytes (40)
 *     8 u32 generation (the BPF path's)   12 u32 isolated endpoints
 *    16 u32 prefixes  20 u32 endpoints with a table  24 u32 tables  28 u32 rules
 *    32 u32 IPv6 prefixes   36 u32 pod interfaces
 *   prefixes   16 bytes: u8 addr[4], u32 identity, u32 endpoint, u8 prefix
 *                        length, u8 flags (isolation), u16 zero
 *   endpoints   8 bytes: u32 endpoint id, u32 table
 *   tables      8 bytes: u32 first rule, u32 rules
 *   rules      16 bytes: u32 identity, u32 rule id, u16 port, u8 direction,
 *                        u8 protocol, u8 port prefix length (0..16; 255: any
 *                        protocol), u8 verdict, u16 zero
 *   IPv6 prefixes 28 bytes: u8 addr[16], u32 identity, u32 endpoint, u8 prefix
 *                        length (0..128), u8 flags, u16 zero (bpfproxy_ipcache6)
 *   pod interfaces 8 bytes: u32 ifindex, u8 addr[4]: the IPv4 address of the
 *                        pod behind it (bpfproxy_pod_addrs), by which an
 *                        IPv6 address the ipcache lacks is judged
 */
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

#define POL_MAGIC     0x50585042u /* "BPXP" */
#define POL_VERSION   2
#define HDR_BYTES     40
#define PFX_BYTES     16
#define PFX6_BYTES    28
#define PODIF_BYTES   8
#define MAX_PODIFS    (1u << 16)
#define EP_BYTES      8
#define TBL_BYTES     8
#define RULE_BYTES    16

#define MAX_PREFIXES  (1u << 22)
#define MAX_ENDPOINTS (1u << 20)
#define MAX_RULES     (1u << 24)

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
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

void eng_policy_free(struct eng_policy *p)
{
	if (!p)
		return;
	free(p->prefixes);
	free(p->pfx_hash);
	free(p->prefixes6);
	free(p->pfx6_hash);
	free(p->podifs);
	free(p->ep_id);
	free(p->ep_table);
	free(p->ep_hash);
	free(p->rules);
	free(p->groups);
	free(p->grp_hash);
	free(p);
}

void eng_policy_info(const struct eng_policy *p, struct eng_policy_info *out)
{
	out->generation = p->generation;
	out->isolated	= p->isolated;
	out->prefixes	= p->nprefixes + p->nprefixes6;
	out->endpoints	= p->nendpoints;
	out->tables	= p->ntables;
	out->entries	= p->nrules;
	out->epoch	= p->epoch;
	out->bytes	= p->bytes;
}

/* Within one table: by (identity, direction), longest key prefix first. */
static int cmp_rule(const void *a, const void *b)
{
	const struct eng_pol_rule *x = a, *y = b;

	if (x->identity != y->identity)
		return x->identity < y->identity ? -1 : 1;
	if (x->dir != y->dir)
		return x->dir < y->dir ? -1 : 1;
	return (int)y->key_plen - (int)x->key_plen;
}

static void *alloc(size_t n, size_t size, size_t *bytes)
{
	*bytes += n * size;
	return calloc(n ? n : 1, size);
}

/* The IPv6 ipcache (bpfproxy_ipcache6): as the IPv4 one, 128-bit prefixes. */
static int parse_prefixes6(struct eng_policy *p, const uint8_t *o, uint32_t n, char *why,
			   size_t whylen)
{
	int have_len[129] = {0};

	p->nprefixes6 = n;
	p->pfx6_mask  = pow2_at_least((uint64_t)n * 2) - 1;
	p->prefixes6  = alloc(n, sizeof(*p->prefixes6), &p->bytes);
	p->pfx6_hash  = alloc(p->pfx6_mask + 1, sizeof(uint32_t), &p->bytes);
	if (!p->prefixes6 || !p->pfx6_hash) {
		fail(why, whylen, "out of memory for a policy of %u IPv6 prefixes", n);
		return -1;
	}
	for (uint32_t i = 0; i < n; i++, o += PFX6_BYTES) {
		struct eng_pol_prefix6 *x = &p->prefixes6[i];
		eng_ip6			masked;
		uint32_t		h;

		memcpy(&x->addr, o, 16);
		x->identity = rd32(o + 16);
		x->endpoint = rd32(o + 20);
		x->plen	    = o[24];
		x->flags    = o[25] & (ENG_IPC_F_INGRESS | ENG_IPC_F_EGRESS);
		eng_pol_mask6(&x->addr, x->plen, &masked);
		if (x->plen > 128 || !eng_ip6_eq(&masked, &x->addr)) {
			fail(why, whylen,
			     "policy blob: IPv6 prefix %u has length %u or host bits set", i,
			     x->plen);
			return -1;
		}
		h = eng_pol_pfx6_hash(&x->addr, x->plen) & p->pfx6_mask;
		for (;; h = (h + 1) & p->pfx6_mask) {
			uint32_t v = p->pfx6_hash[h];

			if (!v)
				break;
			if (eng_ip6_eq(&p->prefixes6[v - 1].addr, &x->addr) &&
			    p->prefixes6[v - 1].plen == x->plen) {
				fail(why, whylen, "policy blob: IPv6 prefix %u is listed twice", i);
				return -1;
			}
		}
		p->pfx6_hash[h]	  = i + 1;
		have_len[x->plen] = 1;
	}
	for (int l = 128; l >= 0; l--)
		if (have_len[l])
			p->lens6[p->nlens6++] = (uint8_t)l;
	return 0;
}

struct eng_policy *eng_policy_parse(const uint8_t *buf, size_t len, char *why, size_t whylen)
{
	struct eng_policy *p;
	uint32_t	   npfx, nep, ntbl, nrule, npfx6, npodif;
	uint64_t	   need;
	const uint8_t	  *o;
	int		   have_len[33] = {0};

	if (len < HDR_BYTES) {
		fail(why, whylen, "policy blob of %zu bytes: shorter than its %d-byte header", len,
		     HDR_BYTES);
		return NULL;
	}
	if (rd32(buf) != POL_MAGIC || rd16(buf + 4) != POL_VERSION || rd16(buf + 6) != HDR_BYTES) {
		fail(why, whylen,
		     "policy blob: magic %#x version %u header %u; expected %#x, %u, %u (agent and "
		     "addon from different builds?)",
		     rd32(buf), rd16(buf + 4), rd16(buf + 6), POL_MAGIC, POL_VERSION, HDR_BYTES);
		return NULL;
	}
	npfx  = rd32(buf + 16);
	nep   = rd32(buf + 20);
	ntbl  = rd32(buf + 24);
	nrule = rd32(buf + 28);
	npfx6  = rd32(buf + 32);
	npodif = rd32(buf + 36);
	if (npfx6 > MAX_PREFIXES || npodif > MAX_PODIFS) {
		fail(why, whylen,
		     "policy blob: %u IPv6 prefixes (at most %u), %u pod interfaces (at most %u)",
		     npfx6, MAX_PREFIXES, npodif, MAX_PODIFS);
		return NULL;
	}
	if (npfx > MAX_PREFIXES || nep > MAX_ENDPOINTS || ntbl > nep + 1 || nrule > MAX_RULES) {
		fail(why, whylen,
		     "policy blob: %u prefixes, %u endpoints, %u tables, %u rules: past the "
		     "engine's limits (%u, %u, endpoints + 1, %u)",
		     npfx, nep, ntbl, nrule, MAX_PREFIXES, MAX_ENDPOINTS, MAX_RULES);
		return NULL;
	}
	need = HDR_BYTES + (uint64_t)npfx * PFX_BYTES + (uint64_t)nep * EP_BYTES +
	       (uint64_t)ntbl * TBL_BYTES + (uint64_t)nrule * RULE_BYTES +
	       (uint64_t)npfx6 * PFX6_BYTES + (uint64_t)npodif * PODIF_BYTES;
	if (need != len) {
		fail(why, whylen, "policy blob: %zu bytes, its counts say %llu", len,
		     (unsigned long long)need);
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		fail(why, whylen, "out of memory for the policy");
		return NULL;
	}
	p->bytes      = sizeof(*p);
	p->generation = rd32(buf + 8);
	p->isolated   = rd32(buf + 12);

	/* ipcache prefixes */
	p->nprefixes = npfx;
	p->pfx_mask  = pow2_at_least((uint64_t)npfx * 2) - 1;
	p->prefixes  = alloc(npfx, sizeof(*p->prefixes), &p->bytes);
	p->pfx_hash  = alloc(p->pfx_mask + 1, sizeof(uint32_t), &p->bytes);
	if (!p->prefixes || !p->pfx_hash)
		goto oom;
	o = buf + HDR_BYTES;
	for (uint32_t i = 0; i < npfx; i++, o += PFX_BYTES) {
		struct eng_pol_prefix *x = &p->prefixes[i];
		uint32_t	       h;

		memcpy(&x->addr, o, 4);
		x->identity = rd32(o + 4);
		x->endpoint = rd32(o + 8);
		x->plen	    = o[12];
		x->flags    = o[13] & (ENG_IPC_F_INGRESS | ENG_IPC_F_EGRESS);
		if (x->plen > 32 || (x->addr & ~eng_pol_mask(x->plen))) {
			fail(why, whylen, "policy blob: prefix %u has length %u or host bits set",
			     i, x->plen);
			goto bad;
		}
		h = eng_pol_pfx_hash(x->addr, x->plen) & p->pfx_mask;
		for (;; h = (h + 1) & p->pfx_mask) {
			uint32_t v = p->pfx_hash[h];

			if (!v)
				break;
			if (p->prefixes[v - 1].addr == x->addr &&
			    p->prefixes[v - 1].plen == x->plen) {
				fail(why, whylen, "policy blob: prefix %u is listed twice", i);
				goto bad;
			}
		}
		p->pfx_hash[h]	  = i + 1;
		have_len[x->plen] = 1;
	}
	for (int l = 32; l >= 0; l--)
		if (have_len[l])
			p->lens[p->nlens++] = (uint8_t)l;

	/* endpoints -> tables */
	p->nendpoints = nep;
	p->ntables    = ntbl;
	p->ep_mask    = pow2_at_least((uint64_t)nep * 2) - 1;
	p->ep_id      = alloc(nep, sizeof(uint32_t), &p->bytes);
	p->ep_table   = alloc(nep, sizeof(uint32_t), &p->bytes);
	p->ep_hash    = alloc(p->ep_mask + 1, sizeof(uint32_t), &p->bytes);
	if (!p->ep_id || !p->ep_table || !p->ep_hash)
		goto oom;
	for (uint32_t i = 0; i < nep; i++, o += EP_BYTES) {
		uint32_t h;

		p->ep_id[i]    = rd32(o);
		p->ep_table[i] = rd32(o + 4);
		if (p->ep_table[i] >= ntbl) {
			fail(why, whylen, "policy blob: endpoint %u names table %u of %u",
			     p->ep_id[i], p->ep_table[i], ntbl);
			goto bad;
		}
		h = eng_mix32(p->ep_id[i]) & p->ep_mask;
		for (; p->ep_hash[h]; h = (h + 1) & p->ep_mask) {
			if (p->ep_id[p->ep_hash[h] - 1] == p->ep_id[i]) {
				fail(why, whylen, "policy blob: endpoint %u is listed twice",
				     p->ep_id[i]);
				goto bad;
			}
		}
		p->ep_hash[h] = i + 1;
	}

	/* rules, grouped per (table, identity, direction), longest prefix first */
	p->nrules = nrule;
	p->rules  = alloc(nrule, sizeof(*p->rules), &p->bytes);
	p->groups = alloc(nrule, sizeof(*p->groups), &p->bytes);
	if (!p->rules || !p->groups)
		goto oom;
	{
		const uint8_t *tb   = o;
		const uint8_t *rb   = o + (size_t)ntbl * TBL_BYTES;
		uint32_t       next = 0;

		for (uint32_t t = 0; t < ntbl; t++) {
			uint32_t first = rd32(tb + t * TBL_BYTES), n = rd32(tb + t * TBL_BYTES + 4);

			if (first != next || (uint64_t)first + n > nrule) {
				fail(why, whylen,
				     "policy blob: table %u holds rules %u..+%u; expected to start "
				     "at %u, within %u",
				     t, first, n, next, nrule);
				goto bad;
			}
			next = first + n;
			for (uint32_t k = first; k < first + n; k++) {
				const uint8_t	    *r = rb + (size_t)k * RULE_BYTES;
				struct eng_pol_rule *x = &p->rules[k];

				x->identity  = rd32(r);
				x->rule_id   = rd32(r + 4);
				x->port	     = rd16(r + 8);
				x->dir	     = r[10];
				x->proto     = r[11];
				x->port_plen = r[12];
				x->verdict   = r[13];
				if ((x->dir != ENG_POL_INGRESS && x->dir != ENG_POL_EGRESS) ||
				    (x->verdict != ENG_POL_ALLOW && x->verdict != ENG_POL_DENY) ||
				    (x->port_plen > 16 && x->port_plen != ENG_POL_ANY_PROTO)) {
					fail(why, whylen,
					     "policy blob: rule %u of table %u: direction %u, "
					     "verdict %u, port prefix %u",
					     k, t, x->dir, x->verdict, x->port_plen);
					goto bad;
				}
				if (x->port_plen == ENG_POL_ANY_PROTO) {
					x->key_plen = 40;
					x->proto    = 0;
					x->port	    = 0;
				} else {
					x->key_plen = (uint8_t)(48 + x->port_plen);
					x->port &= x->port_plen ? (uint16_t)(0xffffu
									     << (16 - x->port_plen))
								: 0;
				}
			}
			qsort(p->rules + first, n, sizeof(*p->rules), cmp_rule);
			for (uint32_t k = first; k < first + n;) {
				struct eng_pol_group *g = &p->groups[p->ngroups++];

				g->table    = t;
				g->identity = p->rules[k].identity;
				g->dir	    = p->rules[k].dir;
				g->start    = k;
				while (k < first + n && p->rules[k].identity == g->identity &&
				       p->rules[k].dir == g->dir)
					k++;
				g->count = k - g->start;
			}
		}
		if (next != nrule) {
			fail(why, whylen, "policy blob: tables hold %u rules of %u", next, nrule);
			goto bad;
		}
	}
	p->grp_mask = pow2_at_least((uint64_t)p->ngroups * 2) - 1;
	p->grp_hash = alloc(p->grp_mask + 1, sizeof(uint32_t), &p->bytes);
	if (!p->grp_hash)
		goto oom;
	for (uint32_t i = 0; i < p->ngroups; i++) {
		const struct eng_pol_group *g = &p->groups[i];
		uint32_t h = eng_pol_grp_hash(g->table, g->identity, g->dir) & p->grp_mask;

		while (p->grp_hash[h])
			h = (h + 1) & p->grp_mask;
		p->grp_hash[h] = i + 1;
	}
	o = buf + len - (size_t)npfx6 * PFX6_BYTES - (size_t)npodif * PODIF_BYTES;
	if (parse_prefixes6(p, o, npfx6, why, whylen))
		goto bad;
	o += (size_t)npfx6 * PFX6_BYTES;
	/* pod interfaces: their pods' isolation, from the IPv4 ipcache */
	p->npodifs = npodif;
	p->podifs  = alloc(npodif, sizeof(*p->podifs), &p->bytes);
	if (!p->podifs)
		goto oom;
	for (uint32_t i = 0; i < npodif; i++, o += PODIF_BYTES) {
		struct eng_pol_end e;
		uint32_t	   a;

		memcpy(&a, o + 4, 4);
		eng_pol_resolve(p, a, &e);
		p->podifs[i].ifindex = rd32(o);
		p->podifs[i].iso     = e.flags;
		if (i && p->podifs[i].ifindex <= p->podifs[i - 1].ifindex) {
			fail(why, whylen,
			     "policy blob: pod interfaces out of order or listed twice (ifindex %u "
			     "after %u)",
			     p->podifs[i].ifindex, p->podifs[i - 1].ifindex);
			goto bad;
		}
	}
	return p;
oom:
	fail(why, whylen, "out of memory for a policy of %u prefixes, %u endpoints, %u rules", npfx,
	     nep, nrule);
bad:
	eng_policy_free(p);
	return NULL;
}

void eng_require_policy(struct eng *e, int on)
{
	atomic_store(&e->policy_required, !!on);
}

static void policy_reclaim(struct eng *e)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < e->npol_retired; i++) {
		if (eng_qs_passed(e, e->pol_retired_qs[i])) {
			eng_policy_free(e->pol_retired[i]);
			continue;
		}
		e->pol_retired[k] = e->pol_retired[i];
		memcpy(e->pol_retired_qs[k], e->pol_retired_qs[i], sizeof(e->pol_retired_qs[i]));
		k++;
	}
	e->npol_retired = k;
}

/* Every session's cached decision forgotten (checked again at its next
 * packet): when the epoch wraps, so that no decision of an epoch given
 * 32767 swaps ago is taken for one of the new. */
static void forget_decisions(struct eng *e)
{
	struct eng_sessions *s = &e->sessions;

	for (uint32_t i = 0; i <= s->mask; i++)
		atomic_store_explicit(&s->slots[i].pol, 0, memory_order_relaxed);
}

int eng_set_policy(struct eng *e, struct eng_policy *p)
{
	struct eng_policy *old;
	uint64_t	   snap[ENG_MAX_WORKERS + 1];
	uint64_t	   deadline;
	int		   wrapped;

	pthread_mutex_lock(&e->table_mu);
	policy_reclaim(e);
	if (e->npol_retired == sizeof(e->pol_retired) / sizeof(e->pol_retired[0])) {
		pthread_mutex_unlock(&e->table_mu);
		return -1;
	}
	wrapped	     = e->pol_epoch >= ENG_POL_EPOCH_MAX;
	e->pol_epoch = wrapped ? 1 : e->pol_epoch + 1;
	p->epoch     = e->pol_epoch;
	old	     = atomic_exchange_explicit(&e->policy, p, memory_order_seq_cst);
	eng_qs_snapshot(e, snap);
	if (wrapped) {
		/* no worker may still hold the policy of the old epoch when the
		 * decisions are forgotten: wait (a vector takes microseconds) */
		while (!eng_qs_passed(e, snap))
			sched_yield();
		forget_decisions(e);
	}
	if (!old) {
		pthread_mutex_unlock(&e->table_mu);
		return 0;
	}
	deadline = eng_now_ns() + 2000000;
	while (!eng_qs_passed(e, snap) && eng_now_ns() < deadline)
		sched_yield();
	if (eng_qs_passed(e, snap)) {
		eng_policy_free(old);
	} else {
		e->pol_retired[e->npol_retired] = old;
		memcpy(e->pol_retired_qs[e->npol_retired], snap, sizeof(snap));
		e->npol_retired++;
	}
	pthread_mutex_unlock(&e->table_mu);
	return 0;
}

void eng_policy_destroy_all(struct eng *e)
{
	eng_policy_free(atomic_load(&e->policy));
	atomic_store(&e->policy, NULL);
	for (uint32_t i = 0; i < e->npol_retired; i++)
		eng_policy_free(e->pol_retired[i]);
	e->npol_retired = 0;
}
