/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The graph: one C function per node, each over every packet queued for it
 * in this vector (indices into the worker's struct eng_vec), queueing each
 * for its next node. Nodes run in a fixed order, which is a topological
 * order of the graph (engine.h), so each runs at most once per vector:
 *
 *   ip4-parse   Ethernet + IPv4 + TCP/UDP, every length checked against the
 *               frame (no field trusted), header checksum verified; the
 *               tuple into the struct of arrays. -> session | drop
 *   session     hash all keys first (prefetching their slots), then look
 *               each up; fold the packet into the flow's state, push its
 *               deadline. -> nat (hit) | lb (miss)
 *   lb          frontend lookup (exact, then NodePort on node addresses);
 *               backend: ClientIP affinity, else the set's Maglev table
 *               (the BPF path's, same flow hash) or uniform random over the
 *               cluster set or (traffic policy Local) the local set; SNAT
 *               decision and port; both session entries. -> nat | reject |
 *               policy | drop
 *   policy      NetworkPolicy (policy.h), only while an endpoint is
 *               isolated: new flows after translation (their session
 *               entries made here once allowed), sessions whose decision
 *               predates the policy in force. -> nat | drop
 *   reject      TCP RST / ICMP port unreachable built in place, back out of
 *               the port it came in on. -> output | drop
 *   nat         addresses, ports, TTL rewritten with incremental checksum
 *               updates (IPv4 header, TCP/UDP with pseudo header). -> l2 | drop
 *   icmp-error  an ICMP error (unreachable, time exceeded, parameter problem)
 *               quoting one of the engine's flows, sent on the way that flow
 *               takes: the quoted header gets the reverse of the flow's
 *               rewrite, the outer addresses the flow's (bpf/lib/service.h
 *               service_icmp()), every checksum updated. -> l2 | drop
 *   l2-rewrite  MACs and output port: replies back to where the flow came
 *               from, forward packets from the neighbour table. -> output | drop
 *   output      handed to the I/O layer (TX ring of the port) or the caller
 *   drop        counted per reason, buffer freed
 *
 * The decisions are the BPF path's (bpf/lib/service.h, lb.h, conntrack.h,
 * nat.h, reject.h), with one difference: there is no stack to pass a packet
 * to, so what the BPF path would leave to the kernel is dropped, counted.
 */
#include <arpa/inet.h>
#include <string.h>

#include "policy.h"

#define AHEAD		 4
#define SNAT_PORT_TRIES	 8
#define ADOPT_PER_VECTOR 32

#define TCP_FIN		 0x01
#define TCP_SYN		 0x02
#define TCP_RST		 0x04
#define TCP_ACK		 0x10

#define PROTO_TCP	 6
#define PROTO_UDP	 17
#define PROTO_ICMP	 1
#define PROTO_AFFINITY	 0xff

const char *const eng_node_names[ENG_N__MAX] = {
	[ENG_N_INPUT] = "input",	 [ENG_N_PARSE] = "ip4-parse",
	[ENG_N_PARSE6] = "ip6-parse",	 [ENG_N_SESSION] = "session",
	[ENG_N_SESSION6] = "session6",	 [ENG_N_LB] = "lb",
	[ENG_N_LB6] = "lb6",		 [ENG_N_REJECT] = "reject",
	[ENG_N_NAT] = "nat",		 [ENG_N_NAT6] = "nat6",
	[ENG_N_ICMP_ERR] = "icmp-error", [ENG_N_L2] = "l2-rewrite",
	[ENG_N_L2_6] = "l2-rewrite6",	 [ENG_N_OUTPUT] = "output",
	[ENG_N_DROP] = "drop",		 [ENG_N_POLICY] = "policy",
	[ENG_N_POLICY6] = "policy6",
};

/* ---- helpers --------------------------------------------------------------- */

static inline uint16_t rd16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return v;
}
static inline uint32_t rd32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}
static inline void wr16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}
static inline void wr32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

/* One's complement arithmetic on values as they sit in memory (the same
 * in either byte order, used consistently): bpf/lib/common.h. */
static inline uint16_t csum_fold32(uint32_t sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}
static inline uint16_t csum_replace4(uint16_t csum, uint32_t from, uint32_t to)
{
	uint32_t sum = (uint16_t)~csum;

	sum += (uint16_t) ~(from & 0xffff) + (uint16_t) ~(from >> 16);
	sum += (to & 0xffff) + (to >> 16);
	return csum_fold32(sum);
}
static inline uint16_t csum_replace2(uint16_t csum, uint16_t from, uint16_t to)
{
	uint32_t sum = (uint16_t)~csum;

	sum += (uint16_t)~from;
	sum += to;
	return csum_fold32(sum);
}
static uint32_t csum_add(const uint8_t *p, uint32_t len, uint32_t sum)
{
	uint32_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += rd16(p + i);
	if (len & 1) {
		uint8_t last[2] = {p[len - 1], 0};

		sum += rd16(last);
	}
	return sum;
}

static inline uint32_t rnd(struct eng_worker *w)
{
	uint64_t x = w->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	w->rng = x;
	return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

static inline void enq(struct eng_worker *w, enum eng_node n, uint32_t i)
{
	w->q[n][w->qn[n]++] = (uint16_t)i;
	w->v.next[i]	    = (uint8_t)n;
	if (__builtin_expect(w->v.trace[i] >= 0, 0)) {
		struct eng_trace_rec *r = &w->tr[w->v.trace[i]];

		if (r->npath < ENG_TRACE_PATH)
			r->path[r->npath++] = (uint8_t)n;
	}
}

static inline void to_drop(struct eng_worker *w, uint32_t i, enum eng_reason r)
{
	w->v.reason[i] = (uint8_t)r;
	enq(w, ENG_N_DROP, i);
}

static inline const struct eng_port *port_of(const struct eng_table *t, uint8_t p)
{
	return p < t->nports ? &t->ports[p] : NULL;
}

/* ---- ip4-parse -------------------------------------------------------------- */

/* Whether an IPv4 header (ihl bytes, a multiple of 4) sums wrong: 32-bit
 * words into a 64-bit sum, folded once at the end. */
static inline int ip_csum_bad(const uint8_t *ip, uint32_t ihl)
{
	uint64_t sum = 0;

	for (uint32_t o = 0; o < ihl; o += 4)
		sum += rd32(ip + o);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return csum_fold32((uint32_t)(sum & 0xffff) + (uint32_t)(sum >> 16)) != 0;
}

static void node_parse(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
		       uint32_t n, uint64_t now)
{
	struct eng_vec *v = &w->v;

	(void)t;
	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t       i   = in[k];
		const uint8_t *d   = v->data[i], *ip, *l4;
		uint32_t       len = v->len[i], ihl, tot;
		uint16_t       frag;

		if (k + AHEAD < n)
			__builtin_prefetch(v->data[in[k + AHEAD]]);
		if (len < 14) {
			to_drop(w, i, ENG_R_SHORT_FRAME);
			continue;
		}
		if (d[12] != 0x08 || d[13] != 0x00) {
			if (d[12] == 0x86 && d[13] == 0xdd)
				enq(w, ENG_N_PARSE6, i);
			else
				to_drop(w, i, ENG_R_NOT_IPV4);
			continue;
		}
		if (len < 14 + 20) {
			to_drop(w, i, ENG_R_SHORT_FRAME);
			continue;
		}
		ip = d + 14;
		if ((ip[0] >> 4) != 4) {
			to_drop(w, i, ENG_R_IP_VERSION);
			continue;
		}
		ihl = (ip[0] & 0x0f) * 4u;
		if (ihl < 20 || 14 + ihl > len) {
			to_drop(w, i, ENG_R_IP_HDR_LEN);
			continue;
		}
		tot = ntohs(rd16(ip + 2));
		if (tot < ihl || 14 + tot > len) {
			to_drop(w, i, ENG_R_IP_TOTAL_LEN);
			continue;
		}
		if (ip_csum_bad(ip, ihl)) {
			to_drop(w, i, ENG_R_IP_CHECKSUM);
			continue;
		}
		frag = ntohs(rd16(ip + 6));
		if (frag & 0x3fff) {
			to_drop(w, i, ENG_R_FRAGMENT);
			continue;
		}
		v->proto[i] = ip[9];
		l4	    = ip + ihl;
		if (ip[9] == PROTO_TCP) {
			uint32_t doff;

			if (tot < ihl + 20) {
				to_drop(w, i, ENG_R_L4_TRUNCATED);
				continue;
			}
			doff = (l4[12] >> 4) * 4u;
			if (doff < 20 || ihl + doff > tot) {
				to_drop(w, i, ENG_R_TCP_HDR_LEN);
				continue;
			}
			v->tcp_flags[i] = l4[13];
		} else if (ip[9] == PROTO_UDP) {
			uint32_t ulen;

			if (tot < ihl + 8) {
				to_drop(w, i, ENG_R_L4_TRUNCATED);
				continue;
			}
			ulen = ntohs(rd16(l4 + 4));
			if (ulen < 8 || ulen > tot - ihl) {
				to_drop(w, i, ENG_R_UDP_LEN);
				continue;
			}
			v->tcp_flags[i] = 0;
		} else if (ip[9] == PROTO_ICMP) {
			const uint8_t *iip;
			uint32_t       iihl;

			/* only errors about TCP/UDP whose quote holds the inner
			 * header and the 8 bytes after it (ports, and the UDP
			 * checksum); anything else is no business of the engine */
			if (tot < ihl + 8 + 20 || (l4[0] != 3 && l4[0] != 11 && l4[0] != 12)) {
				to_drop(w, i, ENG_R_L4_PROTO);
				continue;
			}
			iip  = l4 + 8;
			iihl = (iip[0] & 0x0f) * 4u;
			if ((iip[0] >> 4) != 4 || iihl < 20 || ihl + 8 + iihl + 8 > tot ||
			    (iip[9] != PROTO_TCP && iip[9] != PROTO_UDP)) {
				to_drop(w, i, ENG_R_L4_PROTO);
				continue;
			}
			v->proto[i]	= PROTO_ICMP;
			v->inner_off[i] = (uint16_t)(14 + ihl + 8);
			/* the key of the flow the error is about: the quoted
			 * packet went the other way */
			v->saddr[i]  = rd32(iip + 16);
			v->daddr[i]  = rd32(iip + 12);
			v->sport[i]  = rd16(iip + iihl + 2);
			v->dport[i]  = rd16(iip + iihl);
			v->ttl[i]    = ip[8];
			v->l4_off[i] = (uint16_t)(14 + ihl);
			v->ip_len[i] = (uint16_t)tot;
			if (__builtin_expect(v->trace[i] >= 0, 0)) {
				struct eng_trace_rec *r = &w->tr[v->trace[i]];

				r->proto    = PROTO_ICMP;
				r->in_saddr = rd32(ip + 12);
				r->in_daddr = rd32(ip + 16);
			}
			enq(w, ENG_N_ICMP_ERR, i);
			continue;
		} else {
			to_drop(w, i, ENG_R_L4_PROTO);
			continue;
		}
		v->saddr[i]  = rd32(ip + 12);
		v->daddr[i]  = rd32(ip + 16);
		v->sport[i]  = rd16(l4);
		v->dport[i]  = rd16(l4 + 2);
		v->ttl[i]    = ip[8];
		v->l4_off[i] = (uint16_t)(14 + ihl);
		v->ip_len[i] = (uint16_t)tot;
		if (__builtin_expect(v->trace[i] >= 0, 0)) {
			struct eng_trace_rec *r = &w->tr[v->trace[i]];

			r->proto    = ip[9];
			r->in_saddr = v->saddr[i];
			r->in_daddr = v->daddr[i];
			r->in_sport = v->sport[i];
			r->in_dport = v->dport[i];
		}
		enq(w, ENG_N_SESSION, i);
	}
}

/* ---- session --------------------------------------------------------------- */

static inline void key_of(const struct eng_vec *v, uint32_t i, struct eng_key *k)
{
	k->saddr = v->saddr[i];
	k->daddr = v->daddr[i];
	k->sport = v->sport[i];
	k->dport = v->dport[i];
	k->proto = v->proto[i];
}

/* The key of an entry's other direction: the reverse of its rewrite. */
static inline void peer_key(const struct eng_view *e, uint8_t proto, struct eng_key *k)
{
	k->saddr = e->nat_daddr;
	k->daddr = e->nat_saddr;
	k->sport = e->nat_dport;
	k->dport = e->nat_sport;
	k->proto = proto;
}

static inline uint32_t export_at(const struct eng_table *t, uint8_t proto, uint8_t state,
				 uint64_t now)
{
	uint64_t half = eng_ct_lifetime(t, proto, state) / 2 / 1000000000ULL;

	return (uint32_t)(now / 1000000000ULL + (half ? half : 1));
}

/* bpf/lib/conntrack.h ct_update(): the packet's effect on the flow state. */
static inline uint8_t state_after(uint8_t state, uint8_t dir, uint8_t proto, uint8_t fl)
{
	if (dir == ENG_CT_DIR_REPLY)
		state |= ENG_CT_S_REPLY_SEEN;
	if (proto != PROTO_TCP) {
		if (state & ENG_CT_S_REPLY_SEEN)
			state |= ENG_CT_S_ESTABLISHED;
		return state;
	}
	if (dir == ENG_CT_DIR_FWD && (state & ENG_CT_S_REPLY_SEEN) && (fl & TCP_ACK))
		state |= ENG_CT_S_ESTABLISHED;
	if (fl & TCP_RST)
		state |= ENG_CT_S_RST;
	if (fl & TCP_FIN)
		state |= dir == ENG_CT_DIR_FWD ? ENG_CT_S_FIN_FWD : ENG_CT_S_FIN_REPLY;
	if ((fl & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
	    (state & (ENG_CT_S_RST | ENG_CT_S_FIN_FWD | ENG_CT_S_FIN_REPLY)))
		state = 0;
	return state;
}

/* A packet of a live session: its effect on the flow's state and deadline,
 * the conntrack copy kept fresh. -> nat */
static void sess_hit(struct eng_worker *w, const struct eng_table *t, uint32_t i, uint64_t now)
{
	struct eng_vec	    *v	   = &w->v;
	struct eng_sessions *s	   = &w->e->sessions;
	int		     exp   = w->ctx != NULL;
	uint32_t	     now_s = (uint32_t)(now / 1000000000ULL);
	struct eng_view	    *e	   = &v->view[i];
	struct eng_sess	    *slot  = &s->slots[e->slot];
	struct eng_key	     key;
	uint8_t		     st;

	key_of(v, i, &key);
	st = state_after(e->state, e->dir, key.proto, v->tcp_flags[i]);
	if (st != e->state) {
		struct eng_key	pk, back;
		struct eng_view pv;
		int64_t		p;

		atomic_store_explicit(&slot->state, st, memory_order_relaxed);
		peer_key(e, key.proto, &pk);
		p = eng_sess_lookup(s, eng_hash(s, &pk), &pk, &pv);
		if (p >= 0) {
			peer_key(&pv, key.proto, &back);
			/* only a peer that points back at us is ours */
			if (back.saddr == key.saddr && back.daddr == key.daddr &&
			    back.sport == key.sport && back.dport == key.dport) {
				struct eng_sess *ps = &s->slots[p];

				atomic_store_explicit(&ps->state, st, memory_order_relaxed);
				atomic_store_explicit(&ps->expires,
						      now + eng_ct_lifetime(t, key.proto, st),
						      memory_order_relaxed);
				if (exp) {
					ps->export_at_s = export_at(t, key.proto, st, now);
					eng_ct_queue(w, ps, now);
				}
			}
		}
		e->state       = st;
		e->export_at_s = 0; /* write ours too */
	}
	atomic_store_explicit(&slot->expires, now + eng_ct_lifetime(t, key.proto, st),
			      memory_order_relaxed);
	if (exp && now_s >= e->export_at_s) {
		slot->export_at_s = export_at(t, key.proto, st, now);
		eng_ct_queue(w, slot, now);
	}
	enq(w, ENG_N_NAT, i);
}

static void node_session(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
			 uint32_t n, uint64_t now)
{
	struct eng_vec	    *v = &w->v;
	struct eng_sessions *s = &w->e->sessions;

	/* hash every key, prefetching its home slot */
	for (uint32_t k = 0; k < n; k++) {
		uint32_t       i = in[k];
		struct eng_key key;

		key_of(v, i, &key);
		v->hash[i] = eng_hash(s, &key);
		__builtin_prefetch(&s->slots[v->hash[i] & s->mask]);
	}
	for (uint32_t k = 0; k < n; k++) {
		uint32_t	 i = in[k];
		struct eng_key	 key;
		struct eng_view *e = &v->view[i];

		key_of(v, i, &key);
		if (eng_sess_lookup(s, v->hash[i], &key, e) < 0) {
			enq(w, ENG_N_LB, i);
			continue;
		}
		if (e->expires < now) {
			/* only the quiet direction of a live flow may have
			 * expired: alive while its peer is */
			struct eng_key	pk;
			struct eng_view pv;

			peer_key(e, key.proto, &pk);
			if (eng_sess_lookup(s, eng_hash(s, &pk), &pk, &pv) < 0 ||
			    pv.expires < now) {
				e->dir = 0; /* a new flow from here on */
				enq(w, ENG_N_LB, i);
				continue;
			}
		}
		if (w->pol_on) {
			/* the decision taken under the policy in force stands
			 * (one compare, as the BPF path's conntrack pol_gen);
			 * any other is taken again in the policy node */
			if (w->pol && e->pol == w->pol->epoch) {
				sess_hit(w, t, i, now);
			} else if (w->pol && e->pol == (w->pol->epoch | ENG_POL_DENIED)) {
				to_drop(w, i, ENG_R_POLICY_DENIED);
			} else {
				enq(w, ENG_N_POLICY, i);
			}
			continue;
		}
		sess_hit(w, t, i, now);
	}
}

/* ---- lb ---------------------------------------------------------------------- */

static inline int opens_flow(uint8_t proto, uint8_t fl)
{
	return proto != PROTO_TCP || (fl & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN;
}

static void view_of(struct eng_view *e, const struct eng_sess *s, uint32_t slot)
{
	e->slot	       = slot;
	e->nat_saddr   = s->nat_saddr;
	e->nat_daddr   = s->nat_daddr;
	e->nat_sport   = s->nat_sport;
	e->nat_dport   = s->nat_dport;
	e->dir	       = s->dir;
	e->flags       = s->flags;
	e->state       = atomic_load_explicit(&s->state, memory_order_relaxed);
	e->pol	       = atomic_load_explicit(&s->pol, memory_order_relaxed);
	e->out_port    = s->out_port;
	e->svc_id      = s->svc_id;
	e->export_at_s = s->export_at_s;
	e->expires     = atomic_load_explicit(&s->expires, memory_order_relaxed);
	memcpy(e->dmac, s->dmac, 6);
	memcpy(e->smac, s->smac, 6);
}

/* The backend of a ClientIP affinity record, if live and allowed. */
static int affinity_get(struct eng_sessions *s, const struct eng_frontend *fe, uint32_t client,
			int local_only, uint64_t now, struct eng_backend *out)
{
	struct eng_key	ak = {.saddr = client, .daddr = fe->svc_id, .proto = PROTO_AFFINITY};
	struct eng_view av;

	if (eng_sess_lookup(s, eng_hash(s, &ak), &ak, &av) < 0 || av.expires < now)
		return 0;
	if (local_only && !(av.flags & ENG_BE_F_LOCAL))
		return 0;
	out->addr  = av.nat_daddr;
	out->port  = av.nat_dport;
	out->flags = av.flags;
	return 1;
}

static void affinity_put(struct eng_sessions *s, const struct eng_frontend *fe, uint32_t client,
			 const struct eng_backend *be, uint64_t now)
{
	struct eng_key	ak = {.saddr = client, .daddr = fe->svc_id, .proto = PROTO_AFFINITY};
	struct eng_sess a;

	memset(&a, 0, sizeof(a));
	a.dir	    = ENG_DIR_AFFINITY;
	a.flags	    = be->flags;
	a.nat_daddr = be->addr;
	a.nat_dport = be->port;
	a.svc_id    = fe->svc_id;
	a.out_port  = 0xff;
	atomic_store(&a.expires, now + (uint64_t)fe->affinity_s * 1000000000ULL);
	pthread_spin_lock(&s->lock);
	eng_sess_insert_locked(s, &ak, &a);
	pthread_spin_unlock(&s->lock);
}

static inline void reply_key(const struct eng_key *fwd, const struct eng_lb *to, struct eng_key *rk)
{
	rk->saddr = to->daddr;
	rk->daddr = to->saddr;
	rk->sport = to->dport;
	rk->dport = to->sport;
	rk->proto = fwd->proto;
}

/* Whether the reply tuple of a translation to `to` is free for the flow
 * `fwd`: no live entry, or fwd's own earlier one (bpf/lib/conntrack.h
 * ct_reply_free()). */
static int reply_free(struct eng_sessions *s, const struct eng_key *fwd, const struct eng_lb *to,
		      uint32_t rhash, uint64_t now)
{
	struct eng_key	rk, back;
	struct eng_view rv;

	reply_key(fwd, to, &rk);
	if (eng_sess_lookup(s, rhash, &rk, &rv) < 0 || rv.expires < now)
		return 1;
	peer_key(&rv, fwd->proto, &back);
	return back.saddr == fwd->saddr && back.daddr == fwd->daddr && back.sport == fwd->sport &&
	       back.dport == fwd->dport;
}

/* Both entries of a new flow, with the table lock held: the forward entry's
 * slot, -1 when the table is full, -2 when the reply tuple is taken. */
static int64_t create_flow_locked(struct eng_worker *w, const struct eng_table *t, uint32_t i,
				  const struct eng_key *fwd, const struct eng_lb *to, uint64_t now)
{
	struct eng_sessions *s = &w->e->sessions;
	struct eng_vec	    *v = &w->v;
	struct eng_sess	     fe, re;
	struct eng_key	     rk;
	uint64_t	     exp = now + eng_ct_lifetime(t, fwd->proto, 0);
	uint32_t	     ex	 = export_at(t, fwd->proto, 0, now);
	int64_t		     fs, rs;

	if (!reply_free(s, fwd, to, to->rhash, now))
		return -2;
	reply_key(fwd, to, &rk);
	memset(&re, 0, sizeof(re));
	re.dir	       = ENG_CT_DIR_REPLY;
	re.flags       = to->flags;
	re.nat_saddr   = fwd->daddr;
	re.nat_sport   = fwd->dport;
	re.nat_daddr   = fwd->saddr;
	re.nat_dport   = fwd->sport;
	re.svc_id      = to->svc_id;
	re.export_at_s = ex;
	/* replies go back the way the flow came in */
	re.out_port = v->rx_port[i];
	memcpy(re.dmac, v->data[i] + 6, 6);
	memcpy(re.smac, v->data[i], 6);
	atomic_store_explicit(&re.expires, exp, memory_order_relaxed);

	memset(&fe, 0, sizeof(fe));
	fe.dir	       = ENG_CT_DIR_FWD;
	fe.flags       = to->flags;
	fe.nat_saddr   = to->saddr;
	fe.nat_sport   = to->sport;
	fe.nat_daddr   = to->daddr;
	fe.nat_dport   = to->dport;
	fe.svc_id      = to->svc_id;
	fe.export_at_s = ex;
	fe.out_port    = 0xff;
	atomic_store_explicit(&fe.expires, exp, memory_order_relaxed);
	atomic_store_explicit(&re.pol, to->pol, memory_order_relaxed);
	atomic_store_explicit(&fe.pol, to->pol, memory_order_relaxed);

	rs = eng_sess_insert_hashed_locked(s, to->rhash, &rk, &re);
	if (rs < 0)
		return -1;
	fs = eng_sess_insert_hashed_locked(s, v->hash[i], fwd, &fe);
	if (fs < 0) {
		eng_sess_delete_locked(s, (uint32_t)rs);
		return -1;
	}
	if (w->ctx) {
		eng_ct_queue(w, &s->slots[rs], now);
		eng_ct_queue(w, &s->slots[fs], now);
	}
	return fs;
}

static inline void pick_snat_port(struct eng_worker *w, const struct eng_table *t,
				  const struct eng_key *fwd, struct eng_lb *to)
{
	struct eng_key rk;

	to->sport =
		htons((uint16_t)(t->snat_min + rnd(w) % ((uint32_t)t->snat_max - t->snat_min + 1)));
	reply_key(fwd, to, &rk);
	to->rhash = eng_hash(&w->e->sessions, &rk);
}

/* lb, pass 1: frontend, backend, translation; the reply key's slot is
 * prefetched for pass 2. Returns whether the packet goes on to pass 2. */
static int lb_decide(struct eng_worker *w, const struct eng_table *t, uint32_t i, uint64_t now,
		     uint32_t *adopted)
{
	struct eng_vec		  *v	    = &w->v;
	struct eng_sessions	  *s	    = &w->e->sessions;
	const struct eng_port	  *rp	    = port_of(t, v->rx_port[i]);
	int			   from_pod = rp && (rp->flags & ENG_PORT_F_POD);
	const struct eng_frontend *fe;
	const struct eng_neigh	  *nb;
	struct eng_backend	   be;
	struct eng_key		   key, rk;
	struct eng_lb		  *to = &v->lb[i];
	uint32_t		   start, cnt, total;
	int			   local_only, opening;

	key_of(v, i, &key);
	fe = eng_fe_lookup(t, key.daddr, key.dport, key.proto);
	if (!fe) {
		to_drop(w, i, ENG_R_NO_FRONTEND);
		return 0;
	}
	total	= (uint32_t)fe->cluster_count + fe->local_count;
	opening = opens_flow(key.proto, v->tcp_flags[i]);
	if (total && w->ctx && (!opening || key.proto == PROTO_UDP) &&
	    *adopted < ADOPT_PER_VECTOR) {
		/* A flow the kernel path opened (before the engine took this
		 * frontend over): carry it on as it was set up. */
		struct eng_sess a;
		int64_t		fs = -1;

		(*adopted)++;
		if (eng_ct_adopt_lookup(w, &key, now, &a)) {
			pthread_spin_lock(&s->lock);
			fs = eng_sess_insert_hashed_locked(s, v->hash[i], &key, &a);
			pthread_spin_unlock(&s->lock);
		}
		if (fs >= 0) {
			/* its policy decision (none recorded yet) is taken in
			 * the policy node */
			view_of(&v->view[i], &s->slots[fs], (uint32_t)fs);
			enq(w, w->pol_on ? ENG_N_POLICY : ENG_N_NAT, i);
			return 0;
		}
	}
	if (!opening) {
		if (total == 0)
			enq(w, ENG_N_REJECT, i);
		else
			to_drop(w, i, ENG_R_NOT_OPENING);
		return 0;
	}
	local_only = (!from_pod && (fe->flags & ENG_FE_F_EXTERNAL))
			     ? !!(fe->flags & ENG_FE_F_EXT_LOCAL)
			     : !!(fe->flags & ENG_FE_F_INT_LOCAL);
	start	   = fe->be_start + (local_only ? fe->cluster_count : 0);
	cnt	   = local_only ? fe->local_count : fe->cluster_count;
	if (cnt == 0) {
		if (total == 0)
			enq(w, ENG_N_REJECT, i);
		else
			to_drop(w, i, ENG_R_NO_LOCAL_ENDPOINTS);
		return 0;
	}
	if (!fe->affinity_s || !affinity_get(s, fe, key.saddr, local_only, now, &be)) {
		uint32_t ord;

		if (fe->flags & ENG_FE_F_MAGLEV) {
			/* the BPF path's table and hash (bpf/lib/maglev.h):
			 * both pick the same backend for this flow */
			uint32_t m  = local_only ? fe->maglev_m_local : fe->maglev_m;
			uint32_t at = fe->maglev_start + (local_only ? fe->maglev_m : 0);
			uint32_t h  = eng_maglev_hash(t->maglev_seed, key.saddr, key.daddr,
						      key.sport, key.dport, key.proto);
			ord	    = t->maglev[at + h % m];
		} else {
			ord = rnd(w) % cnt;
		}
		be = t->bes[start + ord];
	}
	if (fe->affinity_s)
		affinity_put(s, fe, key.saddr, &be, now);

	nb = eng_neigh_lookup(t, be.addr);
	if (!nb) {
		to_drop(w, i, ENG_R_NO_NEIGHBOUR);
		return 0;
	}
	to->saddr  = key.saddr;
	to->sport  = key.sport;
	to->daddr  = be.addr;
	to->dport  = be.port;
	to->svc_id = fe->svc_id;
	to->pol	   = 0;
	to->flags  = from_pod ? 0 : ENG_CT_F_EXTERNAL;
	if (from_pod && be.addr == key.saddr) {
		/* hairpin: the pod would drop a packet from itself */
		to->saddr = t->hairpin;
		to->flags |= ENG_CT_F_SNAT | ENG_CT_F_HAIRPIN;
	} else if (!from_pod && (fe->flags & ENG_FE_F_EXTERNAL) && !(be.flags & ENG_BE_F_LOCAL)) {
		/* externalTrafficPolicy Cluster to another node: SNAT to this
		 * node, so the reply comes back through us */
		if (!nb->snat) {
			to_drop(w, i, ENG_R_NO_SNAT_SOURCE);
			return 0;
		}
		to->saddr = nb->snat;
		to->flags |= ENG_CT_F_SNAT;
	}
	if (to->flags & ENG_CT_F_SNAT) {
		pick_snat_port(w, t, &key, to);
	} else {
		reply_key(&key, to, &rk);
		to->rhash = eng_hash(s, &rk);
	}
	__builtin_prefetch(&s->slots[to->rhash & s->mask]);
	return 1;
}

/* lb, pass 2: both entries of each new flow (pend: m packets decided by
 * pass 1 and, with policy on, allowed by the policy node), under the table
 * lock taken once per few flows. -> nat | drop */
static void lb_commit(struct eng_worker *w, const struct eng_table *t, const uint16_t *pend,
		      uint32_t m, uint64_t now)
{
	struct eng_vec	    *v = &w->v;
	struct eng_sessions *s = &w->e->sessions;

	for (uint32_t k = 0; k < m;) {
		uint32_t end = k + 16 < m ? k + 16 : m;

		pthread_spin_lock(&s->lock);
		for (; k < end; k++) {
			uint32_t       i  = pend[k];
			struct eng_lb *to = &v->lb[i];
			struct eng_key key;
			int64_t	       fs;

			key_of(v, i, &key);
			fs = create_flow_locked(w, t, i, &key, to, now);
			if (fs == -2 && !(to->flags & ENG_CT_F_SNAT)) {
				/* the reply tuple is another flow's: remap the
				 * source port, keep the address (as the kernel's
				 * NAT does on a clash) */
				to->flags |= ENG_CT_F_SNAT;
			}
			for (int tries = 0; fs == -2 && tries < SNAT_PORT_TRIES; tries++) {
				pick_snat_port(w, t, &key, to);
				fs = create_flow_locked(w, t, i, &key, to, now);
			}
			if (fs == -2) {
				to_drop(w, i, ENG_R_NAT_PORTS);
				continue;
			}
			if (fs < 0) {
				to_drop(w, i, ENG_R_SESSION_FULL);
				continue;
			}
			view_of(&v->view[i], &s->slots[fs], (uint32_t)fs);
			enq(w, ENG_N_NAT, i);
		}
		pthread_spin_unlock(&s->lock);
	}
}

static void node_lb(struct eng_worker *w, const struct eng_table *t, const uint16_t *in, uint32_t n,
		    uint64_t now)
{
	uint32_t adopted = 0, m = 0;
	uint16_t pend[ENG_VEC_MAX];

	/* with policy on, a new flow's entries are made only once the policy
	 * node allowed it (the BPF path creates conntrack entries only for
	 * allowed flows) */
	for (uint32_t k = 0; k < n; k++) {
		if (!lb_decide(w, t, in[k], now, &adopted))
			continue;
		if (w->pol_on)
			enq(w, ENG_N_POLICY, in[k]);
		else
			pend[m++] = in[k];
	}
	lb_commit(w, t, pend, m, now);
}

/* ---- policy ------------------------------------------------------------------ */

/* bpf/lib/policy.h pol_flow_of(): the opening direction of the flow a
 * session entry (key k) belongs to. */
static inline void pol_flow_of(const struct eng_key *k, const struct eng_view *e,
			       struct eng_pol_flow *f)
{
	if (e->dir == ENG_CT_DIR_FWD) {
		f->client = k->saddr;
		f->seen	  = e->nat_saddr;
		f->server = e->nat_daddr;
		f->dport  = e->nat_dport;
	} else {
		f->client = e->nat_daddr;
		f->seen	  = k->daddr;
		f->server = k->saddr;
		f->dport  = k->sport;
	}
	f->proto = k->proto;
	f->self	 = !!(e->flags & ENG_CT_F_HAIRPIN);
}

/* Record a session's decision in both halves (bpf/lib/conntrack.h
 * ct_set_policy()). */
static void pol_record(struct eng_worker *w, uint32_t i, const struct eng_key *key, uint16_t pol)
{
	struct eng_sessions *s = &w->e->sessions;
	struct eng_view	    *e = &w->v.view[i];
	struct eng_key	     pk, back;
	struct eng_view	     pv;
	int64_t		     p;

	atomic_store_explicit(&s->slots[e->slot].pol, pol, memory_order_relaxed);
	e->pol = pol;
	peer_key(e, key->proto, &pk);
	p = eng_sess_lookup(s, eng_hash(s, &pk), &pk, &pv);
	if (p < 0)
		return;
	peer_key(&pv, key->proto, &back);
	if (back.saddr == key->saddr && back.daddr == key->daddr && back.sport == key->sport &&
	    back.dport == key->dport)
		atomic_store_explicit(&s->slots[p].pol, pol, memory_order_relaxed);
}

/*
 * policy: NetworkPolicy, the BPF path's decisions (policy.h). Reached only
 * while something is isolated (or a policy is required and none loaded:
 * everything drops, policy-not-loaded):
 *  - a new flow from lb, after DNAT and SNAT: the client's egress to the
 *    backend, the backend's ingress from the client as it will see it;
 *    allowed ones get their session entries here (lb pass 2) with the
 *    decision recorded. -> nat | drop
 *  - a session packet whose decision was taken under another policy (or
 *    never: flows adopted from the BPF conntrack): taken again, recorded
 *    in both halves. -> nat | drop
 * Established flows of the policy in force never come here (session: one
 * compare). Denials are counted per reason in the drop node.
 */
static void node_policy(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
			uint32_t n, uint64_t now)
{
	struct eng_vec		*v = &w->v;
	const struct eng_policy *p = w->pol;
	uint32_t		 m = 0;
	uint16_t		 pend[ENG_VEC_MAX];

	for (uint32_t k = 0; k < n; k++) {
		uint32_t	    i = in[k];
		struct eng_pol_flow f;
		struct eng_key	    key;
		enum eng_reason	    r;

		if (!p) {
			to_drop(w, i, ENG_R_POLICY_NOT_LOADED);
			continue;
		}
		key_of(v, i, &key);
		if (v->view[i].dir == 0) {
			const struct eng_lb *to = &v->lb[i];

			f.client = key.saddr;
			f.seen	 = to->saddr;
			f.server = to->daddr;
			f.dport	 = to->dport;
			f.proto	 = key.proto;
			f.self	 = !!(to->flags & ENG_CT_F_HAIRPIN);
			r	 = eng_pol_check(p, &f);
			if (r != ENG_R_NONE) {
				to_drop(w, i, r);
				continue;
			}
			v->lb[i].pol = p->epoch;
			pend[m++]    = (uint16_t)i;
			continue;
		}
		pol_flow_of(&key, &v->view[i], &f);
		r = eng_pol_check(p, &f);
		pol_record(w, i, &key,
			   (uint16_t)(p->epoch | (r != ENG_R_NONE ? ENG_POL_DENIED : 0)));
		if (r != ENG_R_NONE) {
			to_drop(w, i, r);
			continue;
		}
		sess_hit(w, t, i, now);
	}
	lb_commit(w, t, pend, m, now);
}

/* ---- reject ----------------------------------------------------------------- */

static void swap_macs(uint8_t *d)
{
	uint8_t m[6];

	memcpy(m, d, 6);
	memcpy(d, d + 6, 6);
	memcpy(d + 6, m, 6);
}

#include "nodes6.h"

static void reject_ip(uint8_t *ip, uint32_t saddr, uint32_t daddr, uint8_t proto, uint16_t len)
{
	memset(ip, 0, 20);
	ip[0] = 0x45;
	wr16(ip + 2, htons(len));
	ip[8] = 64;
	ip[9] = proto;
	wr32(ip + 12, saddr);
	wr32(ip + 16, daddr);
	wr16(ip + 10, csum_fold32(csum_add(ip, 20, 0)));
}

static void node_reject(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
			uint32_t n, uint64_t now)
{
	struct eng_vec *v = &w->v;

	(void)t;
	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i   = in[k];
		uint8_t *d   = v->data[i];
		uint32_t ihl = v->l4_off[i] - 14u, saddr = v->saddr[i], daddr = v->daddr[i];

		if (d[12] == 0x86) {
			/* IPv6 (ip6-parse made sure of the EtherType) */
			if (!reject6(w, i))
				continue;
		} else if (v->proto[i] == PROTO_TCP) {
			uint8_t *th  = d + v->l4_off[i];
			uint8_t	 fl  = th[13];
			uint32_t seq = ntohl(rd32(th + 4)), ack = rd32(th + 8);
			uint32_t payload = v->ip_len[i] - ihl - (th[12] >> 4) * 4u;
			uint16_t sp = v->sport[i], dp = v->dport[i];
			uint8_t *ip = d + 14, *tcp = d + 34, ph[12];
			uint32_t sum;

			if (fl & TCP_RST) { /* never answer a RST */
				to_drop(w, i, ENG_R_RST_NOT_ANSWERED);
				continue;
			}
			swap_macs(d);
			reject_ip(ip, daddr, saddr, PROTO_TCP, 40);
			memset(tcp, 0, 20);
			wr16(tcp, dp);
			wr16(tcp + 2, sp);
			tcp[12] = 5 << 4;
			if (fl & TCP_ACK) {
				wr32(tcp + 4, ack);
				tcp[13] = TCP_RST;
			} else {
				wr32(tcp + 8,
				     htonl(seq + payload + !!(fl & TCP_SYN) + !!(fl & TCP_FIN)));
				tcp[13] = TCP_RST | TCP_ACK;
			}
			wr32(ph, daddr);
			wr32(ph + 4, saddr);
			ph[8]  = 0;
			ph[9]  = PROTO_TCP;
			ph[10] = 0;
			ph[11] = 20;
			sum    = csum_add(ph, 12, 0);
			wr16(tcp + 16, csum_fold32(csum_add(tcp, 20, sum)));
			v->len[i] = 54;
		} else {
			/* ICMP port unreachable quoting the IPv4 header and 8 bytes */
			uint8_t	 quote[60 + 8];
			uint32_t qlen = ihl + 8, total = 14 + 20 + 8 + qlen;
			uint8_t *ip = d + 14, *icmp = d + 34;

			if (total > v->cap[i]) {
				to_drop(w, i, ENG_R_SHORT_FRAME);
				continue;
			}
			memcpy(quote, d + 14, qlen);
			swap_macs(d);
			reject_ip(ip, daddr, saddr, PROTO_ICMP, (uint16_t)(20 + 8 + qlen));
			memset(icmp, 0, 8);
			icmp[0] = 3; /* destination unreachable */
			icmp[1] = 3; /* port unreachable */
			memcpy(icmp + 8, quote, qlen);
			wr16(icmp + 2, csum_fold32(csum_add(icmp, 8 + qlen, 0)));
			v->len[i] = (uint16_t)total;
		}
		v->out_port[i] = v->rx_port[i];
		w->reasons[ENG_R_REJECTED]++;
		v->reason[i] = ENG_R_REJECTED;
		enq(w, ENG_N_OUTPUT, i);
	}
}

/* ---- nat --------------------------------------------------------------------- */

/* A sender with checksum offload (a local socket behind a veth: pods, the
 * lab) hands over TCP/UDP with only the pseudo-header sum in the checksum
 * field (CHECKSUM_PARTIAL: the device was to finish it), and XDP passes it on
 * as it is. Such a field equals the folded, not inverted, pseudo-header sum;
 * the engine then computes the whole checksum, as the kernel's
 * skb_checksum_help() would. (A complete checksum equal to that by chance
 * is recomputed to the same value.) */
static void complete_partial_csum(const struct eng_vec *v, uint32_t i, uint8_t *d, uint8_t *cp)
{
	uint32_t l4len = v->ip_len[i] - (v->l4_off[i] - 14u);
	uint32_t sum;
	uint16_t c, folded;

	/* the pseudo header as 16-bit words in memory order: the addresses'
	 * halves, the protocol (second byte of its word), the length */
	sum = (v->saddr[i] & 0xffff) + (v->saddr[i] >> 16) + (v->daddr[i] & 0xffff) +
	      (v->daddr[i] >> 16) + ((uint32_t)v->proto[i] << 8) + htons((uint16_t)l4len);
	folded = (uint16_t)~csum_fold32(sum);
	if (__builtin_expect(rd16(cp) != folded, 1))
		return;
	wr16(cp, 0);
	c = csum_fold32(csum_add(d + v->l4_off[i], l4len, sum));
	if (v->proto[i] == PROTO_UDP && c == 0)
		c = 0xffff;
	wr16(cp, c);
}

static void node_nat(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
		     uint32_t n, uint64_t now)
{
	struct eng_vec *v = &w->v;

	(void)t;
	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t	       i = in[k];
		const struct eng_view *e = &v->view[i];
		uint8_t		      *d = v->data[i], *ip = d + 14, *l4 = d + v->l4_off[i];
		uint8_t		      *cp = l4 + (v->proto[i] == PROTO_TCP ? 16 : 6);
		uint16_t	       ipc, l4c, oldw, neww;
		int		       l4sum;

		if (k + AHEAD < n)
			__builtin_prefetch(v->data[in[k + AHEAD]] + 14);
		if (v->ttl[i] <= 1) {
			to_drop(w, i, ENG_R_TTL);
			continue;
		}
		ipc   = rd16(ip + 10);
		l4sum = v->proto[i] == PROTO_TCP || rd16(cp) != 0; /* UDP checksum 0: none */
		if (l4sum)
			complete_partial_csum(v, i, d, cp);
		l4c = rd16(cp);
		if (e->nat_saddr != v->saddr[i]) {
			ipc = csum_replace4(ipc, v->saddr[i], e->nat_saddr);
			if (l4sum)
				l4c = csum_replace4(l4c, v->saddr[i], e->nat_saddr);
			wr32(ip + 12, e->nat_saddr);
		}
		if (e->nat_daddr != v->daddr[i]) {
			ipc = csum_replace4(ipc, v->daddr[i], e->nat_daddr);
			if (l4sum)
				l4c = csum_replace4(l4c, v->daddr[i], e->nat_daddr);
			wr32(ip + 16, e->nat_daddr);
		}
		if (e->nat_sport != v->sport[i]) {
			if (l4sum)
				l4c = csum_replace2(l4c, v->sport[i], e->nat_sport);
			wr16(l4, e->nat_sport);
		}
		if (e->nat_dport != v->dport[i]) {
			if (l4sum)
				l4c = csum_replace2(l4c, v->dport[i], e->nat_dport);
			wr16(l4 + 2, e->nat_dport);
		}
		/* TTL and protocol share a 16-bit word: the TTL is its first
		 * byte, so in memory order the word drops by one (TTL >= 2) */
		oldw = rd16(ip + 8);
		neww = htons((uint16_t)(ntohs(oldw) - 0x100));
		wr16(ip + 8, neww);
		ipc = csum_replace2(ipc, oldw, neww);
		wr16(ip + 10, ipc);
		if (l4sum) {
			if (v->proto[i] == PROTO_UDP && l4c == 0)
				l4c = 0xffff;
			wr16(cp, l4c);
		}
		enq(w, ENG_N_L2, i);
	}
}

/* ---- icmp-error ------------------------------------------------------------------ */

/* Write a 16-bit word inside the ICMP message, folding the change into the
 * ICMP checksum (every quoted field sits at an even offset from the ICMP
 * header, so word-wise updates hold). */
static inline void icmp_put16(uint8_t *icmp, uint8_t *at, uint16_t to)
{
	uint16_t from = rd16(at);

	if (from == to)
		return;
	wr16(icmp + 2, csum_replace2(rd16(icmp + 2), from, to));
	wr16(at, to);
}

static inline void icmp_put32(uint8_t *icmp, uint8_t *at, uint32_t to)
{
	uint32_t from = rd32(at);

	if (from == to)
		return;
	wr16(icmp + 2, csum_replace4(rd16(icmp + 2), from, to));
	wr32(at, to);
}

static void node_icmp_err(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
			  uint32_t n, uint64_t now)
{
	struct eng_vec	    *v = &w->v;
	struct eng_sessions *s = &w->e->sessions;

	(void)t;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t	 i = in[k];
		struct eng_view *e = &v->view[i];
		struct eng_key	 key, inner;
		uint8_t		*d = v->data[i], *ip = d + 14, *icmp = d + v->l4_off[i];
		uint8_t		*iip  = d + v->inner_off[i];
		uint32_t	 iihl = (iip[0] & 0x0f) * 4u, end = 14u + v->ip_len[i];
		uint8_t		*il4 = iip + iihl;
		uint32_t	 osrc, odst, outer_s = rd32(ip + 12), outer_d = rd32(ip + 16);
		uint32_t	 csum_at = v->inner_off[i] + iihl + (iip[9] == PROTO_TCP ? 16 : 6);
		uint16_t	 ipc, oldw, neww;

		key_of(v, i, &key);
		key.proto = iip[9];
		if (eng_sess_lookup(s, eng_hash(s, &key), &key, e) < 0) {
			to_drop(w, i, ENG_R_ICMP_UNRELATED);
			continue;
		}
		if (e->expires < now) {
			/* the quiet direction of a live flow (as in session) */
			struct eng_view pv;

			peer_key(e, key.proto, &inner);
			if (eng_sess_lookup(s, eng_hash(s, &inner), &inner, &pv) < 0 ||
			    pv.expires < now) {
				to_drop(w, i, ENG_R_ICMP_UNRELATED);
				continue;
			}
		}
		if (v->ttl[i] <= 1) {
			to_drop(w, i, ENG_R_TTL);
			continue;
		}
		/* the quoted packet gets the reverse of this entry's rewrite:
		 * its peer's key */
		peer_key(e, key.proto, &inner);
		/* the quoted L4 checksum only when it was quoted (and, for UDP,
		 * used) */
		if (csum_at + 2 <= end) {
			uint8_t *cp = d + csum_at;
			uint16_t c  = rd16(cp);

			if (!(key.proto == PROTO_UDP && c == 0)) {
				c = csum_replace4(c, rd32(iip + 12), inner.saddr);
				c = csum_replace4(c, rd32(iip + 16), inner.daddr);
				c = csum_replace2(c, rd16(il4), inner.sport);
				c = csum_replace2(c, rd16(il4 + 2), inner.dport);
				if (key.proto == PROTO_UDP && c == 0)
					c = 0xffff;
				icmp_put16(icmp, cp, c);
			}
		}
		ipc = rd16(iip + 10);
		ipc = csum_replace4(ipc, rd32(iip + 12), inner.saddr);
		ipc = csum_replace4(ipc, rd32(iip + 16), inner.daddr);
		icmp_put16(icmp, iip + 10, ipc);
		icmp_put32(icmp, iip + 12, inner.saddr);
		icmp_put32(icmp, iip + 16, inner.daddr);
		icmp_put16(icmp, il4, inner.sport);
		icmp_put16(icmp, il4 + 2, inner.dport);

		/* outer: to where the flow's packets go; an error from the quoted
		 * destination itself speaks for the service, one from a router
		 * on the path keeps the router's address */
		odst = e->nat_daddr;
		osrc = outer_s == key.saddr ? e->nat_saddr : outer_s;
		ipc  = rd16(ip + 10);
		ipc  = csum_replace4(ipc, outer_s, osrc);
		ipc  = csum_replace4(ipc, outer_d, odst);
		wr32(ip + 12, osrc);
		wr32(ip + 16, odst);
		oldw = rd16(ip + 8);
		neww = htons((uint16_t)(ntohs(oldw) - 0x100));
		wr16(ip + 8, neww);
		ipc = csum_replace2(ipc, oldw, neww);
		wr16(ip + 10, ipc);
		enq(w, ENG_N_L2, i);
	}
}

/* ---- l2-rewrite -------------------------------------------------------------- */

static void node_l2(struct eng_worker *w, const struct eng_table *t, const uint16_t *in, uint32_t n,
		    uint64_t now)
{
	struct eng_vec *v = &w->v;

	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t	       i = in[k];
		const struct eng_view *e = &v->view[i];
		uint8_t		      *d = v->data[i];

		if (e->dir == ENG_CT_DIR_REPLY && e->out_port != 0xff) {
			if (e->out_port >= t->nports) {
				to_drop(w, i, ENG_R_NO_TX_PORT);
				continue;
			}
			memcpy(d, e->dmac, 6);
			memcpy(d + 6, e->smac, 6);
			v->out_port[i] = e->out_port;
		} else {
			const struct eng_neigh *nb = eng_neigh_lookup(t, e->nat_daddr);

			if (!nb) {
				to_drop(w, i, ENG_R_NO_NEIGHBOUR);
				continue;
			}
			memcpy(d, nb->mac, 6);
			memcpy(d + 6, t->ports[nb->port].mac, 6);
			v->out_port[i] = nb->port;
		}
		enq(w, ENG_N_OUTPUT, i);
	}
}

/* ---- output, drop ----------------------------------------------------------------- */

static void finish_trace(struct eng_worker *w, uint32_t i)
{
	struct eng_vec	     *v = &w->v;
	struct eng_trace_rec *r;
	const uint8_t	     *d;

	if (v->trace[i] < 0)
		return;
	r	    = &w->tr[v->trace[i]];
	r->reason   = v->reason[i];
	r->out_port = v->next[i] == ENG_N_OUTPUT ? v->out_port[i] : 0xff;
	r->len	    = v->len[i];
	r->sess_dir = v->data[i][12] == 0x86 ? w->v6->view6[i].dir : v->view[i].dir;
	if (v->next[i] == ENG_N_OUTPUT && v->len[i] >= 58 && v->data[i][12] == 0x86) {
		d = v->data[i];
		memcpy(r->out_saddr6, d + 22, 16);
		memcpy(r->out_daddr6, d + 38, 16);
		if (d[20] != 58) {
			r->out_sport = rd16(d + 54);
			r->out_dport = rd16(d + 56);
		}
	} else if (v->next[i] == ENG_N_OUTPUT && v->len[i] >= 38 && v->data[i][12] == 0x08) {
		d	     = v->data[i];
		r->out_saddr = rd32(d + 26);
		r->out_daddr = rd32(d + 30);
		if (v->len[i] >= v->l4_off[i] + 4u && d[23] != PROTO_ICMP) {
			r->out_sport = rd16(d + v->l4_off[i]);
			r->out_dport = rd16(d + v->l4_off[i] + 2);
		}
	}
}

static void node_output(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
			uint32_t n, uint64_t now)
{
	(void)t;
	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		finish_trace(w, in[k]);
		w->output(w, in[k]);
	}
}

static void node_drop(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
		      uint32_t n, uint64_t now)
{
	(void)t;
	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		w->reasons[w->v.reason[in[k]]]++;
		finish_trace(w, in[k]);
		w->drop(w, in[k]);
	}
}

typedef void (*node_fn)(struct eng_worker *, const struct eng_table *, const uint16_t *, uint32_t,
			uint64_t);

static const node_fn NODES[ENG_N__MAX] = {
	[ENG_N_PARSE]	 = node_parse,
	[ENG_N_PARSE6]	 = node_parse6,
	[ENG_N_SESSION]	 = node_session,
	[ENG_N_SESSION6] = node_session6,
	[ENG_N_LB]	 = node_lb,
	[ENG_N_LB6]	 = node_lb6,
	[ENG_N_POLICY]	 = node_policy,
	[ENG_N_POLICY6]	 = node_policy6,
	[ENG_N_REJECT]	 = node_reject,
	[ENG_N_NAT]	 = node_nat,
	[ENG_N_NAT6]	 = node_nat6,
	[ENG_N_ICMP_ERR] = node_icmp_err,
	[ENG_N_L2]	 = node_l2,
	[ENG_N_L2_6]	 = node_l2_6,
	[ENG_N_OUTPUT]	 = node_output,
	[ENG_N_DROP]	 = node_drop,
};

/* ---- dispatch ------------------------------------------------------------------------ */

static void trace_begin(struct eng_worker *w)
{
	struct eng     *e = w->e;
	struct eng_vec *v = &w->v;

	w->ntr = 0;
	for (uint32_t i = 0; i < v->n; i++) {
		int32_t b = atomic_load_explicit(&e->trace_budget, memory_order_relaxed);

		v->trace[i] = -1;
		if (b <= 0)
			continue;
		if (!atomic_compare_exchange_strong(&e->trace_budget, &b, b - 1))
			continue;
		{
			struct eng_trace_rec *r = &w->tr[w->ntr];

			memset(r, 0, sizeof(*r));
			r->seq	    = atomic_fetch_add(&e->trace_seq, 1);
			r->worker   = w->id;
			r->rx_port  = v->rx_port[i];
			r->path[0]  = ENG_N_INPUT;
			r->npath    = 1;
			v->trace[i] = (int16_t)w->ntr++;
		}
	}
}

static void trace_end(struct eng_worker *w)
{
	struct eng *e = w->e;

	if (!w->ntr)
		return;
	pthread_mutex_lock(&e->trace_mu);
	for (uint32_t k = 0; k < w->ntr && e->ntrace < ENG_TRACE_MAX; k++)
		e->trace[e->ntrace++] = w->tr[k];
	pthread_mutex_unlock(&e->trace_mu);
	w->ntr = 0;
}

void eng_run(struct eng_worker *w, const struct eng_table *t, uint64_t now, enum eng_node until)
{
	struct eng_vec *v = &w->v;
	uint32_t	n = v->n;

	memset(w->qn, 0, sizeof(w->qn));
	/* the policy of this vector, loaded once (RCU, as the table) */
	w->pol	  = atomic_load_explicit(&w->e->policy, memory_order_acquire);
	w->pol_on = w->pol ? w->pol->isolated != 0
			   : atomic_load_explicit(&w->e->policy_required, memory_order_relaxed);
	w->nodes[ENG_N_INPUT].calls++;
	if (!n)
		return;
	w->nodes[ENG_N_INPUT].vectors++;
	w->nodes[ENG_N_INPUT].packets += n;
	if (__builtin_expect(atomic_load_explicit(&w->e->trace_budget, memory_order_relaxed) > 0,
			     0)) {
		trace_begin(w);
	} else {
		for (uint32_t i = 0; i < n; i++)
			v->trace[i] = -1;
	}
	for (uint32_t i = 0; i < n; i++) {
		v->reason[i]	     = ENG_R_NONE;
		v->view[i].dir	     = 0;
		w->q[ENG_N_PARSE][i] = (uint16_t)i;
		v->next[i]	     = ENG_N_PARSE;
	}
	for (uint32_t i = 0; i < w->ntr; i++)
		w->tr[i].path[w->tr[i].npath++] = ENG_N_PARSE;
	w->qn[ENG_N_PARSE] = n;

	for (int node = ENG_N_PARSE; node < ENG_N__MAX; node++) {
		uint32_t cnt = w->qn[node];
		uint64_t t0;

		if (!cnt)
			continue;
		if (node > (int)until && until != ENG_N__MAX)
			break;
		t0 = eng_ticks();
		NODES[node](w, t, w->q[node], cnt, now);
		w->nodes[node].ticks += eng_ticks() - t0;
		w->nodes[node].calls++;
		w->nodes[node].vectors++;
		w->nodes[node].packets += cnt;
	}
	eng_ct_flush(w);
	if (w->ctx6)
		eng_ct6_flush(w);
	if (w->ntr)
		trace_end(w);
}
