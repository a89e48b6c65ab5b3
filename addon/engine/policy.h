/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NetworkPolicy in the engine: the same decisions as the BPF path
 * (bpf/lib/policy.h), from the same state. The agent hands the engine what
 * the policy maps hold (src/dataplane/bpf/policy-maps.ts PolicyMapWriter
 * written(), encoded by src/dataplane/afxdp/policy.ts); policy.c parses it
 * into one immutable struct eng_policy, swapped in like the table.
 *
 *  - ipcache: address -> {identity, endpoint, isolation}, longest prefix
 *    first (one hash over (prefix, length), probed from the longest length
 *    present down);
 *  - endpoint id -> rule table (tables shared between endpoints as the
 *    BPF path shares inner maps); no table for an isolated endpoint denies
 *    (policy-no-table);
 *  - a table lookup at one identity is the LPM trie's: of the entries for
 *    (identity, direction), kept longest key prefix first, the first that
 *    matches (any protocol: 40 bits; a protocol: 48 + port prefix bits).
 *    A decision is two such lookups, at the peer's identity and at
 *    IDENTITY_ANY: a deny wins, then an allow; nothing denies.
 *  - `isolated` 0 (no endpoint isolated): nothing is enforced, as in the
 *    BPF path (pol_active_gen() 0).
 *
 * Sessions cache the decision with the epoch it was taken at (struct
 * eng_sess.pol): each policy swapped in gets a new epoch, so a flow is
 * checked again at its next packet after any change, as the BPF path
 * checks a conntrack entry again when the generation moved.
 */
#ifndef BPFPROXY_ENGINE_POLICY_H
#define BPFPROXY_ENGINE_POLICY_H

#include "engine.h"

#define ENG_POL_DENIED	  0x8000 /* in eng_sess.pol: the flow is denied */
#define ENG_POL_EPOCH_MAX 0x7fff

#define ENG_IPC_F_INGRESS 0x01 /* bpf/lib/types.h IPC_F_INGRESS_ISO */
#define ENG_IPC_F_EGRESS  0x02 /* IPC_F_EGRESS_ISO */

#define ENG_ID_ANY	  0 /* IDENTITY_ANY */
#define ENG_ID_WORLD	  1
#define ENG_ID_HOST	  2
#define ENG_ID_WORLD6	  3 /* IDENTITY_WORLD6: an IPv6 address the ipcache does not know */

#define ENG_POL_INGRESS	  1 /* POL_DIR_INGRESS */
#define ENG_POL_EGRESS	  2
#define ENG_POL_ALLOW	  1 /* POL_ALLOW */
#define ENG_POL_DENY	  2
#define ENG_POL_NO_TABLE  0
#define ENG_POL_ANY_PROTO 0xff /* eng_pol_rule.port_plen: any protocol and port */

struct eng_pol_prefix {
	uint32_t addr; /* net, host bits clear */
	uint32_t identity;
	uint32_t endpoint;
	uint8_t	 plen;
	uint8_t	 flags; /* ENG_IPC_F_*, only with an endpoint */
};

struct eng_pol_prefix6 {
	eng_ip6	 addr; /* host bits clear */
	uint32_t identity;
	uint32_t endpoint;
	uint8_t	 plen;
	uint8_t	 flags;
};

struct eng_pol_rule {
	uint32_t identity;
	uint32_t rule_id;
	uint16_t port; /* host order, bits past the prefix clear */
	uint8_t	 dir;
	uint8_t	 proto;
	uint8_t	 port_plen; /* 0..16, or ENG_POL_ANY_PROTO */
	uint8_t	 verdict;
	uint8_t	 key_plen; /* the LPM key prefix: 40, or 48 + port_plen */
	uint8_t	 pad;
};

/* (table, identity, direction) -> its rules, longest key prefix first */
struct eng_pol_group {
	uint32_t table, identity;
	uint8_t	 dir;
	uint32_t start, count;
};

struct eng_policy {
	uint32_t generation, isolated;
	uint16_t epoch; /* given by eng_set_policy() */

	uint32_t	       nprefixes;
	struct eng_pol_prefix *prefixes;
	uint32_t	       pfx_mask;
	uint32_t	      *pfx_hash; /* index + 1 */
	uint8_t		       nlens;
	uint8_t		       lens[33]; /* prefix lengths present, longest first */
	/* the IPv6 ipcache (bpfproxy_ipcache6) */
	uint32_t		nprefixes6;
	struct eng_pol_prefix6 *prefixes6;
	uint32_t		pfx6_mask;
	uint32_t	       *pfx6_hash;
	uint8_t			nlens6;
	uint8_t			lens6[129];
	/* pod interfaces (ifindex ascending): the isolation (ENG_IPC_F_*) of
	 * the pod behind each, by its IPv4 address */
	uint32_t npodifs;
	struct {
		uint32_t ifindex;
		uint8_t	 iso;
	} *podifs;

	uint32_t  nendpoints;
	uint32_t *ep_id, *ep_table; /* endpoint id, its table */
	uint32_t  ep_mask;
	uint32_t *ep_hash; /* index + 1 */

	uint32_t	      ntables, nrules;
	struct eng_pol_rule  *rules;
	uint32_t	      ngroups;
	struct eng_pol_group *groups;
	uint32_t	      grp_mask;
	uint32_t	     *grp_hash; /* index + 1 */

	size_t bytes;
};

static inline uint32_t eng_pol_mask(uint8_t plen)
{
	return plen ? htonl(0xffffffffu << (32 - plen)) : 0;
}

static inline uint32_t eng_pol_pfx_hash(uint32_t addr, uint8_t plen)
{
	return eng_mix32(((uint64_t)addr << 8) | plen);
}

/* One end of a flow as the ipcache knows it (bpf/lib/policy.h pol_resolve). */
struct eng_pol_end {
	uint32_t identity, endpoint;
	uint8_t	 flags;
};

static inline void eng_pol_resolve(const struct eng_policy *p, uint32_t addr, struct eng_pol_end *e)
{
	for (uint32_t l = 0; l < p->nlens; l++) {
		uint8_t	 plen = p->lens[l];
		uint32_t a    = addr & eng_pol_mask(plen);
		uint32_t h    = eng_pol_pfx_hash(a, plen) & p->pfx_mask;

		for (uint32_t i = 0; i <= p->pfx_mask; i++) {
			uint32_t		     v = p->pfx_hash[(h + i) & p->pfx_mask];
			const struct eng_pol_prefix *x;

			if (!v)
				break;
			x = &p->prefixes[v - 1];
			if (x->addr == a && x->plen == plen) {
				e->identity = x->identity;
				e->endpoint = x->endpoint;
				e->flags    = x->endpoint ? x->flags : 0;
				return;
			}
		}
	}
	e->identity = ENG_ID_WORLD;
	e->endpoint = 0;
	e->flags    = 0;
}

/* addr with the bits past plen cleared. */
static inline void eng_pol_mask6(const eng_ip6 *addr, uint8_t plen, eng_ip6 *out)
{
	for (int k = 0; k < 4; k++) {
		int bits = (int)plen - 32 * k;

		out->w[k] = bits >= 32 ? addr->w[k]
			    : bits <= 0 ? 0
					: addr->w[k] & htonl(0xffffffffu << (32 - bits));
	}
}

static inline uint32_t eng_pol_pfx6_hash(const eng_ip6 *addr, uint8_t plen)
{
	return eng_ip6_mix(addr) ^ eng_mix32(plen);
}

/* As eng_pol_resolve(), over the IPv6 ipcache (bpf/lib/policy6.h pol6_resolve). */
static inline void eng_pol_resolve6(const struct eng_policy *p, const eng_ip6 *addr,
				    struct eng_pol_end *e)
{
	for (uint32_t l = 0; l < p->nlens6; l++) {
		uint8_t	 plen = p->lens6[l];
		eng_ip6	 a;
		uint32_t h;

		eng_pol_mask6(addr, plen, &a);
		h = eng_pol_pfx6_hash(&a, plen) & p->pfx6_mask;
		for (uint32_t i = 0; i <= p->pfx6_mask; i++) {
			uint32_t		      v = p->pfx6_hash[(h + i) & p->pfx6_mask];
			const struct eng_pol_prefix6 *x;

			if (!v)
				break;
			x = &p->prefixes6[v - 1];
			if (x->plen == plen && eng_ip6_eq(&x->addr, &a)) {
				e->identity = x->identity;
				e->endpoint = x->endpoint;
				e->flags    = x->endpoint ? x->flags : 0;
				return;
			}
		}
	}
	e->identity = ENG_ID_WORLD6;
	e->endpoint = 0;
	e->flags    = 0;
}

static inline uint32_t eng_pol_grp_hash(uint32_t table, uint32_t identity, uint8_t dir)
{
	return eng_mix32(((uint64_t)table << 34) ^ ((uint64_t)identity << 2) ^ dir);
}

/* The table of an endpoint, or -1 (none). */
static inline int64_t eng_pol_table_of(const struct eng_policy *p, uint32_t ep)
{
	uint32_t h = eng_mix32(ep) & p->ep_mask;

	for (uint32_t i = 0; i <= p->ep_mask; i++) {
		uint32_t v = p->ep_hash[(h + i) & p->ep_mask];

		if (!v)
			return -1;
		if (p->ep_id[v - 1] == ep)
			return p->ep_table[v - 1];
	}
	return -1;
}

/* The LPM trie lookup of one table at one identity: the longest matching
 * entry, or NULL. */
static inline const struct eng_pol_rule *eng_pol_lookup(const struct eng_policy *p, uint32_t table,
							uint32_t identity, uint8_t dir,
							uint8_t proto, uint16_t port /* host */)
{
	uint32_t		    h = eng_pol_grp_hash(table, identity, dir) & p->grp_mask;
	const struct eng_pol_group *g = NULL;

	for (uint32_t i = 0; i <= p->grp_mask; i++) {
		uint32_t v = p->grp_hash[(h + i) & p->grp_mask];

		if (!v)
			return NULL;
		g = &p->groups[v - 1];
		if (g->table == table && g->identity == identity && g->dir == dir)
			break;
		g = NULL;
	}
	if (!g)
		return NULL;
	for (uint32_t k = 0; k < g->count; k++) {
		const struct eng_pol_rule *r = &p->rules[g->start + k];
		uint16_t		   m;

		if (r->port_plen == ENG_POL_ANY_PROTO)
			return r;
		if (r->proto != proto)
			continue;
		m = r->port_plen ? (uint16_t)(0xffffu << (16 - r->port_plen)) : 0;
		if (((port ^ r->port) & m) == 0)
			return r;
	}
	return NULL;
}

/* bpf/lib/policy.h pol_table_verdict(): ENG_POL_ALLOW, ENG_POL_DENY or
 * ENG_POL_NO_TABLE. */
static inline int eng_pol_verdict(const struct eng_policy *p, uint32_t ep, uint32_t peer,
				  uint8_t dir, uint8_t proto, uint16_t port_net)
{
	int64_t			   tbl	 = eng_pol_table_of(p, ep);
	uint16_t		   port	 = ntohs(port_net);
	const struct eng_pol_rule *exact = NULL, *any;

	if (tbl < 0)
		return ENG_POL_NO_TABLE;
	if (peer != ENG_ID_ANY) {
		exact = eng_pol_lookup(p, (uint32_t)tbl, peer, dir, proto, port);
		if (exact && exact->verdict != ENG_POL_ALLOW)
			return ENG_POL_DENY;
	}
	any = eng_pol_lookup(p, (uint32_t)tbl, ENG_ID_ANY, dir, proto, port);
	if (any && any->verdict != ENG_POL_ALLOW)
		return ENG_POL_DENY;
	if (exact || any)
		return ENG_POL_ALLOW;
	return ENG_POL_DENY;
}

static inline enum eng_reason eng_pol_reason(int verdict)
{
	if (verdict == ENG_POL_ALLOW)
		return ENG_R_NONE;
	return verdict == ENG_POL_NO_TABLE ? ENG_R_POLICY_NO_TABLE : ENG_R_POLICY_DENIED;
}

/* A flow in its opening direction, after translation (struct pol_flow). */
struct eng_pol_flow {
	uint32_t client; /* net: the client's real address */
	uint32_t seen;	 /* net: the client's address as the server sees it */
	uint32_t server; /* net */
	uint16_t dport;	 /* net */
	uint8_t	 proto;
	uint8_t	 self; /* hairpin */
};

/* bpf/lib/policy.h pol_decide(): both ends resolved, seen_id the identity
 * the server sees the client as. */
static inline enum eng_reason eng_pol_decide(const struct eng_policy *p,
					     const struct eng_pol_end *c,
					     const struct eng_pol_end *s, uint32_t seen_id,
					     uint16_t dport, uint8_t proto, uint8_t self);

/* bpf/lib/policy.h pol_check_flow() with pol_decide(): the client's egress,
 * then the server's ingress from the identity it sees. */
static inline enum eng_reason eng_pol_check(const struct eng_policy   *p,
					    const struct eng_pol_flow *f)
{
	struct eng_pol_end c, s, x;
	uint32_t	   seen_id;

	eng_pol_resolve(p, f->client, &c);
	eng_pol_resolve(p, f->server, &s);
	if (!(c.flags & ENG_IPC_F_EGRESS) && !(s.flags & ENG_IPC_F_INGRESS))
		return ENG_R_NONE;
	seen_id = c.identity;
	if (f->seen != f->client && (s.flags & ENG_IPC_F_INGRESS)) {
		eng_pol_resolve(p, f->seen, &x);
		seen_id = x.identity;
	}
	return eng_pol_decide(p, &c, &s, seen_id, f->dport, f->proto, f->self);
}

/* The isolation of the pod behind ifindex (by its IPv4 address), 0 when
 * none is known there (bpf/lib/policy6.h pol6_pod_isolated()). */
static inline uint8_t eng_pol_podif_iso(const struct eng_policy *p, uint32_t ifindex)
{
	uint32_t lo = 0, hi = p->npodifs;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (p->podifs[mid].ifindex == ifindex)
			return p->podifs[mid].iso;
		if (p->podifs[mid].ifindex < ifindex)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* bpf/lib/policy6.h pol6_unknown_isolated(): own (the pod's IPv6 address)
 * is no endpoint of the IPv6 ipcache while the pod behind ifindex is
 * isolated in direction iso by its IPv4 address: its policy is unknown. */
static inline int eng_pol_unknown_isolated6(const struct eng_policy *p, uint32_t ifindex,
					    const eng_ip6 *own, uint8_t iso)
{
	struct eng_pol_end e;

	if (!(eng_pol_podif_iso(p, ifindex) & iso))
		return 0;
	eng_pol_resolve6(p, own, &e);
	return !e.endpoint;
}

/* An IPv6 flow in its opening direction, after translation. */
struct eng_pol_flow6 {
	eng_ip6	 client, seen, server;
	uint16_t dport; /* net */
	uint8_t	 proto;
	uint8_t	 self;
};

/* bpf/lib/policy6.h pol6_check_flow(). */
static inline enum eng_reason eng_pol_check6(const struct eng_policy	*p,
					     const struct eng_pol_flow6 *f)
{
	struct eng_pol_end c, s, x;
	uint32_t	   seen_id;

	eng_pol_resolve6(p, &f->client, &c);
	eng_pol_resolve6(p, &f->server, &s);
	if (!(c.flags & ENG_IPC_F_EGRESS) && !(s.flags & ENG_IPC_F_INGRESS))
		return ENG_R_NONE;
	seen_id = c.identity;
	if (!eng_ip6_eq(&f->seen, &f->client) && (s.flags & ENG_IPC_F_INGRESS)) {
		eng_pol_resolve6(p, &f->seen, &x);
		seen_id = x.identity;
	}
	return eng_pol_decide(p, &c, &s, seen_id, f->dport, f->proto, f->self);
}

static inline enum eng_reason eng_pol_decide(const struct eng_policy *p,
					     const struct eng_pol_end *c,
					     const struct eng_pol_end *s, uint32_t seen_id,
					     uint16_t dport, uint8_t proto, uint8_t self)
{
	enum eng_reason r;

	if (self || (c->endpoint && c->endpoint == s->endpoint))
		return ENG_R_NONE;
	if (c->flags & ENG_IPC_F_EGRESS) {
		r = eng_pol_reason(
			eng_pol_verdict(p, c->endpoint, s->identity, ENG_POL_EGRESS, proto, dport));
		if (r != ENG_R_NONE)
			return r;
	}
	if ((s->flags & ENG_IPC_F_INGRESS) && seen_id != ENG_ID_HOST)
		return eng_pol_reason(
			eng_pol_verdict(p, s->endpoint, seen_id, ENG_POL_INGRESS, proto, dport));
	return ENG_R_NONE;
}

#endif /* BPFPROXY_ENGINE_POLICY_H */
