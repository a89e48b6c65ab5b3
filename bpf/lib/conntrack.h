/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking for service flows, and for the flows network policy
 * tracks (CT_F_PLAIN: a flow with an isolated endpoint on this node, whose
 * replies must pass; their entries translate to their own tuple). A NAT'd
 * connection has two entries
 * in one hash: CT_DIR_FWD keyed by the client's tuple and CT_DIR_REPLY keyed
 * by the backend's reply tuple. Each carries the rewrite for its direction,
 * so a packet costs one lookup. State lives in both; it is copied to the
 * peer entry only when it changes (first reply, handshake done, FIN, RST).
 *
 * The halves live and die together:
 *  - the map is a plain hash, not an LRU: nothing is evicted behind our
 *    back, so a flood cannot take one half of an idle connection. When the
 *    map is full a new flow is refused (counted as ct-full) and every
 *    established flow keeps working;
 *  - only packets that can open a flow create entries (TCP SYN without ACK,
 *    UDP); anything else of an unknown flow is left to the kernel;
 *  - expiry is a deadline compared with bpf_ktime_get_ns(). A direction
 *    that saw no packet for a while (one-way UDP) is still alive while its
 *    peer is: an expired entry is checked against its peer before it counts
 *    as a miss;
 *  - the agent's GC removes a connection only when both halves expired, and
 *    removes both.
 */
#ifndef BPFPROXY_CONNTRACK_H
#define BPFPROXY_CONNTRACK_H

#include "common.h"
#include "config.h"
#include "trace.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512000); /* agent: bpfMapSizeConntrack */
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_ct SEC(".maps");

static __always_inline void ct_reverse(const struct ct_key *k, struct ct_key *r)
{
	r->saddr  = k->daddr;
	r->daddr  = k->saddr;
	r->sport  = k->dport;
	r->dport  = k->sport;
	r->proto  = k->proto;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
}

/* The key of the other direction: the reverse of this entry's rewrite. */
static __always_inline void ct_peer_key(const struct ct_value *v, __u8 proto, struct ct_key *r)
{
	r->saddr  = v->nat_daddr;
	r->daddr  = v->nat_saddr;
	r->sport  = v->nat_dport;
	r->dport  = v->nat_sport;
	r->proto  = proto;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
}

/* TCP, and SCTP through the flags its first chunk stands for (lib/
 * sctp.h), have states; the others one timeout. */
static __always_inline int ct_has_states(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_SCTP;
}

static __always_inline __u64 ct_lifetime(__u8 proto, __u8 state)
{
	if (!ct_has_states(proto))
		return cfg_ct_udp_ns;
	if (state & CT_S_RST)
		return cfg_ct_rst_seen_ns;
	if ((state & (CT_S_FIN_FWD | CT_S_FIN_REPLY)) == (CT_S_FIN_FWD | CT_S_FIN_REPLY))
		return cfg_ct_fins_seen_ns;
	/* A SYN answered by a SYN-ACK is not a connection yet: a flood from
	 * forged sources that backends answer must not hold entries for the
	 * established timeout. */
	if (state & CT_S_ESTABLISHED)
		return cfg_ct_established_ns;
	return cfg_ct_syn_sent_ns;
}

static __always_inline int ct_key_eq(const struct ct_key *a, const struct ct_key *b)
{
	return a->saddr == b->saddr && a->daddr == b->daddr && a->sport == b->sport &&
	       a->dport == b->dport && a->proto == b->proto;
}

/* The other half of k's connection (*pk: its key), if it points back at k:
 * only that one is ours to change or remove. */
static __always_inline struct ct_value *ct_own_peer(const struct ct_key	  *k,
						    const struct ct_value *v, struct ct_key *pk)
{
	struct ct_value *peer;
	struct ct_key	 back;

	ct_peer_key(v, k->proto, pk);
	peer = bpf_map_lookup_elem(&bpfproxy_ct, pk);
	if (!peer)
		return NULL;
	ct_peer_key(peer, k->proto, &back);
	return ct_key_eq(&back, k) ? peer : NULL;
}

/* Live entry for this tuple, or NULL. An expired entry whose peer is still
 * fresh is alive (and takes the peer's deadline): only the quiet direction
 * of a live connection expired. */
static __always_inline struct ct_value *ct_lookup(const struct ct_key *k, __u64 now)
{
	struct ct_value *v = bpf_map_lookup_elem(&bpfproxy_ct, k);
	struct ct_value *peer;
	struct ct_key	 pk;

	if (!v)
		return NULL;
	if (v->expires_ns >= now)
		return v;
	ct_peer_key(v, k->proto, &pk);
	peer = bpf_map_lookup_elem(&bpfproxy_ct, &pk);
	if (!peer || peer->expires_ns < now)
		return NULL;
	if (!cfg_trace)
		v->expires_ns = peer->expires_ns;
	return v;
}

/* Whether this packet may open a flow: TCP SYN without ACK (nor RST), an
 * SCTP INIT, or any UDP datagram. */
static __always_inline int ct_opens_flow(__u8 proto, __u8 tcp_flags)
{
	if (!ct_has_states(proto))
		return 1;
	return (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN;
}

/* Fold this packet into the entry's state and push the deadline out. */
static __always_inline void ct_update(const struct ct_key *k, struct ct_value *v, __u8 tcp_flags,
				      __u64 now)
{
	__u8 state = v->state;

	if (cfg_trace) /* lib/trace.h: no map writes */
		return;

	if (v->dir == CT_DIR_REPLY)
		state |= CT_S_REPLY_SEEN;
	if (!ct_has_states(k->proto)) {
		if (state & CT_S_REPLY_SEEN)
			state |= CT_S_ESTABLISHED;
	} else {
		if (v->dir == CT_DIR_FWD && (state & CT_S_REPLY_SEEN) && (tcp_flags & TCP_FLAG_ACK))
			state |= CT_S_ESTABLISHED;
		if (tcp_flags & TCP_FLAG_RST)
			state |= CT_S_RST;
		if (tcp_flags & TCP_FLAG_FIN)
			state |= v->dir == CT_DIR_FWD ? CT_S_FIN_FWD : CT_S_FIN_REPLY;
		/* A new SYN on a closed flow (port reuse) starts it over. */
		if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
		    (state & (CT_S_RST | CT_S_FIN_FWD | CT_S_FIN_REPLY)))
			state = 0;
	}
	if (state != v->state) {
		struct ct_key	 pk;
		struct ct_value *peer;

		v->state = state;
		peer	 = ct_own_peer(k, v, &pk);
		if (peer) {
			peer->state	 = state;
			peer->expires_ns = now + ct_lifetime(k->proto, state);
		}
	}
	v->expires_ns = now + ct_lifetime(k->proto, state);
}

/* Whether the reply tuple of a translation to 'to' is free for the flow
 * 'fwd': no live entry holds it, or the one that does is fwd's own earlier
 * incarnation (port reuse). Another live flow's reply entry is never taken
 * over: its replies would go to the wrong client. */
static __always_inline int ct_reply_free(const struct ct_key *fwd, const struct ct_key *to,
					 __u64 now)
{
	struct ct_key	 rk, back;
	struct ct_value *v;

	ct_reverse(to, &rk);
	v = ct_lookup(&rk, now);
	if (!v)
		return 1;
	ct_peer_key(v, fwd->proto, &back);
	return ct_key_eq(&back, fwd);
}

/* Create both entries of a connection. fwd is the client's tuple, 'to' the
 * tuple after translation (fwd itself for a CT_F_PLAIN flow); pol_gen the
 * policy generation the flow was checked at (0: not checked). Returns 0 or
 * a negative errno (-E2BIG: the map is full); on failure neither entry is
 * left behind. */
static __always_inline int ct_create(const struct ct_key *fwd, const struct ct_key *to, __u8 flags,
				     __u32 svc_id, __u32 pol_gen, __u64 now)
{
	struct ct_value v = {};
	struct ct_key	rk;
	int		err;

	if (cfg_trace) /* lib/trace.h: no map writes */
		return 0;
	v.created_ns = now;
	v.expires_ns = now + ct_lifetime(fwd->proto, 0);
	v.flags	     = flags;
	v.svc_id     = svc_id;
	v.pol_gen    = pol_gen;

	/* reply: backend -> (SNAT'd) client, rewritten back to service -> client */
	ct_reverse(to, &rk);
	v.dir	    = CT_DIR_REPLY;
	v.nat_saddr = fwd->daddr;
	v.nat_sport = fwd->dport;
	v.nat_daddr = fwd->saddr;
	v.nat_dport = fwd->sport;
	err	    = bpf_map_update_elem(&bpfproxy_ct, &rk, &v, BPF_ANY);
	if (err)
		return err;

	v.dir	    = CT_DIR_FWD;
	v.nat_saddr = to->saddr;
	v.nat_sport = to->sport;
	v.nat_daddr = to->daddr;
	v.nat_dport = to->dport;
	err	    = bpf_map_update_elem(&bpfproxy_ct, fwd, &v, BPF_ANY);
	if (err)
		bpf_map_delete_elem(&bpfproxy_ct, &rk);
	return err;
}

/* Record a policy decision taken at generation gen in this entry and in
 * its peer (when the peer points back at it): both directions of a flow
 * share one decision. */
static __always_inline void ct_set_policy(const struct ct_key *k, struct ct_value *v, __u32 gen,
					  int denied)
{
	struct ct_key	 pk;
	struct ct_value *peer;

	if (cfg_trace) /* lib/trace.h: no map writes */
		return;
	v->pol_gen = gen;
	v->flags   = denied ? v->flags | CT_F_POL_DENIED : v->flags & ~CT_F_POL_DENIED;
	peer	   = ct_own_peer(k, v, &pk);
	if (!peer)
		return;
	peer->pol_gen = gen;
	peer->flags   = denied ? peer->flags | CT_F_POL_DENIED : peer->flags & ~CT_F_POL_DENIED;
}

#endif /* BPFPROXY_CONNTRACK_H */
