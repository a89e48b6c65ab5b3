/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 connection tracking: lib/conntrack.h's rules (two entries per
 * connection that live and die together, deadlines, only opening packets
 * create state, a full map refuses new flows) over struct ct6_key in a map
 * of its own, bpfproxy_ct6. The lifetimes are lib/conntrack.h's
 * ct_lifetime() and ct_opens_flow().
 */
#ifndef BPFPROXY_CONNTRACK6_H
#define BPFPROXY_CONNTRACK6_H

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "parse6.h"
#include "types6.h"

/* Not preallocated (unlike bpfproxy_ct): a node without IPv6 flows pays no
 * memory for it; an insert that cannot allocate is refused as when full. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512000); /* agent: bpfMapSizeConntrack */
	__type(key, struct ct6_key);
	__type(value, struct ct6_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_ct6 SEC(".maps");

static __always_inline void ct6_reverse(const struct ct6_key *k, struct ct6_key *r)
{
	r->saddr  = k->daddr;
	r->daddr  = k->saddr;
	r->sport  = k->dport;
	r->dport  = k->sport;
	r->proto  = k->proto;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
}

static __always_inline void ct6_peer_key(const struct ct6_value *v, __u8 proto, struct ct6_key *r)
{
	r->saddr  = v->nat_daddr;
	r->daddr  = v->nat_saddr;
	r->sport  = v->nat_dport;
	r->dport  = v->nat_sport;
	r->proto  = proto;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
}

static __always_inline int ct6_key_eq(const struct ct6_key *a, const struct ct6_key *b)
{
	return v6_eq(&a->saddr, &b->saddr) && v6_eq(&a->daddr, &b->daddr) && a->sport == b->sport &&
	       a->dport == b->dport && a->proto == b->proto;
}

static __always_inline struct ct6_value *ct6_own_peer(const struct ct6_key   *k,
						      const struct ct6_value *v, struct ct6_key *pk)
{
	struct ct6_value *peer;
	struct ct6_key	  back;

	ct6_peer_key(v, k->proto, pk);
	peer = bpf_map_lookup_elem(&bpfproxy_ct6, pk);
	if (!peer)
		return NULL;
	ct6_peer_key(peer, k->proto, &back);
	return ct6_key_eq(&back, k) ? peer : NULL;
}

static __always_inline struct ct6_value *ct6_lookup(const struct ct6_key *k, __u64 now)
{
	struct ct6_value *v = bpf_map_lookup_elem(&bpfproxy_ct6, k);
	struct ct6_value *peer;
	struct ct6_key	  pk;

	if (!v)
		return NULL;
	if (v->expires_ns >= now)
		return v;
	ct6_peer_key(v, k->proto, &pk);
	peer = bpf_map_lookup_elem(&bpfproxy_ct6, &pk);
	if (!peer || peer->expires_ns < now)
		return NULL;
	if (!cfg_trace)
		v->expires_ns = peer->expires_ns;
	return v;
}

static __always_inline void ct6_update(const struct ct6_key *k, struct ct6_value *v, __u8 tcp_flags,
				       __u64 now)
{
	__u8 state = v->state;

	if (cfg_trace)
		return;
	if (v->dir == CT_DIR_REPLY)
		state |= CT_S_REPLY_SEEN;
	/* SCTP: through the TCP flags its first chunk stands for (lib/sctp.h) */
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
		if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
		    (state & (CT_S_RST | CT_S_FIN_FWD | CT_S_FIN_REPLY)))
			state = 0;
	}
	if (state != v->state) {
		struct ct6_key	  pk;
		struct ct6_value *peer;

		v->state = state;
		peer	 = ct6_own_peer(k, v, &pk);
		if (peer) {
			peer->state	 = state;
			peer->expires_ns = now + ct_lifetime(k->proto, state);
		}
	}
	v->expires_ns = now + ct_lifetime(k->proto, state);
}

static __always_inline int ct6_reply_free(const struct ct6_key *fwd, const struct ct6_key *to,
					  __u64 now)
{
	struct ct6_key	  rk, back;
	struct ct6_value *v;

	ct6_reverse(to, &rk);
	v = ct6_lookup(&rk, now);
	if (!v)
		return 1;
	ct6_peer_key(v, fwd->proto, &back);
	return ct6_key_eq(&back, fwd);
}

static __always_inline int ct6_create(const struct ct6_key *fwd, const struct ct6_key *to,
				      __u8 flags, __u32 svc_id, __u64 now)
{
	struct ct6_value v = {};
	struct ct6_key	 rk;
	int		 err;

	if (cfg_trace)
		return 0;
	v.created_ns = now;
	v.expires_ns = now + ct_lifetime(fwd->proto, 0);
	v.flags	     = flags;
	v.svc_id     = svc_id;

	ct6_reverse(to, &rk);
	v.dir	    = CT_DIR_REPLY;
	v.nat_saddr = fwd->daddr;
	v.nat_sport = fwd->dport;
	v.nat_daddr = fwd->saddr;
	v.nat_dport = fwd->sport;
	err	    = bpf_map_update_elem(&bpfproxy_ct6, &rk, &v, BPF_ANY);
	if (err)
		return err;

	v.dir	    = CT_DIR_FWD;
	v.nat_saddr = to->saddr;
	v.nat_sport = to->sport;
	v.nat_daddr = to->daddr;
	v.nat_dport = to->dport;
	err	    = bpf_map_update_elem(&bpfproxy_ct6, fwd, &v, BPF_ANY);
	if (err)
		bpf_map_delete_elem(&bpfproxy_ct6, &rk);
	return err;
}

#endif /* BPFPROXY_CONNTRACK6_H */
