/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The graph's IPv6 nodes (included by nodes.c, whose helpers they use).
 * ip4-parse hands IPv6 EtherTypes to ip6-parse; from there IPv6 packets
 * take nodes of their own, so the IPv4 ones are the same code as before:
 *
 *   ip6-parse   Ethernet + fixed IPv6 header + TCP/UDP directly after it:
 *               the payload length checked against the frame (frames may
 *               carry padding: the payload length bounds the packet, the
 *               frame bounds the payload length), TCP data offset and UDP
 *               length against the payload, UDP checksum 0 refused.
 *               Extension headers, fragments and ICMPv6 (ND, errors) are
 *               the kernel's: the XDP program passes them, and one that
 *               comes anyway is dropped, counted. -> session6 | drop
 *   session6    as session, over the IPv6 session table (session6.c).
 *               -> nat6 (hit) | lb6 (miss)
 *   lb6         as lb: the IPv6 frontends (exact, then NodePort on the
 *               node's IPv6 addresses), ClientIP affinity, Maglev with the
 *               BPF path's IPv6 flow hash (bpf/lib/lb6.h: addresses folded
 *               to 32 bits), else uniform random; traffic policy Local;
 *               SNAT (hairpin, externalTrafficPolicy Cluster to another
 *               node) from the IPv6 neighbour table. -> nat6 | reject | drop
 *   nat6        addresses and ports with incremental TCP/UDP checksum
 *               updates (the pseudo header's addresses; IPv6 has no header
 *               checksum), hop limit. -> l2-rewrite6 | drop
 *   l2-rewrite6 as l2-rewrite, from the IPv6 neighbour table.
 * reject answers IPv6 too (TCP RST, ICMPv6 port unreachable).
 *
 *   policy6     as policy, with the IPv6 ipcache (bpfproxy_ipcache6's
 *               prefixes in the engine's policy): new flows after
 *               translation, sessions whose decision predates the policy in
 *               force. -> nat6 | drop
 * And, while something is isolated, every IPv6 packet from a pod port
 * (session6) and to one (l2-rewrite6) whose pod address the IPv6 ipcache
 * lacks, while that pod is isolated by its IPv4 address, is dropped
 * (policy-ipv6), as the BPF path's pod hooks do.
 */

#define ETH_HLEN6 14
#define IP6_HLEN  40
#define L4_OFF6	  (ETH_HLEN6 + IP6_HLEN)

/* ---- ip6-parse ------------------------------------------------------------- */

static inline int ip6_ext_hdr(uint8_t nh)
{
	/* hop-by-hop, routing, destination options, ESP, AH, mobility, HIP,
	 * shim6, experimental: headers the engine does not walk */
	return nh == 0 || nh == 43 || nh == 60 || nh == 50 || nh == 51 || nh == 135 ||
	       nh == 139 || nh == 140 || nh == 253 || nh == 254 || nh == 59;
}

static void node_parse6(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
			uint32_t n, uint64_t now)
{
	struct eng_vec *v = &w->v;

	(void)t;
	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t       i   = in[k];
		const uint8_t *d   = v->data[i], *ip = d + ETH_HLEN6, *l4 = d + L4_OFF6;
		uint32_t       len = v->len[i], pl;
		uint8_t	       nh;

		w->v6->view6[i].dir = 0;
		if (len < L4_OFF6) {
			to_drop(w, i, ENG_R_SHORT_FRAME);
			continue;
		}
		if ((ip[0] >> 4) != 6) {
			to_drop(w, i, ENG_R_IP_VERSION);
			continue;
		}
		pl = ntohs(rd16(ip + 4));
		if (pl == 0 || L4_OFF6 + pl > len) {
			to_drop(w, i, ENG_R_IP6_PAYLOAD_LEN);
			continue;
		}
		nh = ip[6];
		if (nh == PROTO_TCP) {
			uint32_t doff;

			if (pl < 20) {
				to_drop(w, i, ENG_R_L4_TRUNCATED);
				continue;
			}
			doff = (l4[12] >> 4) * 4u;
			if (doff < 20 || doff > pl) {
				to_drop(w, i, ENG_R_TCP_HDR_LEN);
				continue;
			}
			v->tcp_flags[i] = l4[13];
		} else if (nh == PROTO_UDP) {
			uint32_t ulen;

			if (pl < 8) {
				to_drop(w, i, ENG_R_L4_TRUNCATED);
				continue;
			}
			ulen = ntohs(rd16(l4 + 4));
			if (ulen < 8 || ulen > pl) {
				to_drop(w, i, ENG_R_UDP_LEN);
				continue;
			}
			if (rd16(l4 + 6) == 0) {
				to_drop(w, i, ENG_R_UDP6_NO_CSUM);
				continue;
			}
			v->tcp_flags[i] = 0;
		} else if (nh == 44) {
			to_drop(w, i, ENG_R_FRAGMENT);
			continue;
		} else if (ip6_ext_hdr(nh) || nh == 58) {
			to_drop(w, i, ENG_R_IP6_EXT_HDR);
			continue;
		} else {
			to_drop(w, i, ENG_R_L4_PROTO);
			continue;
		}
		v->proto[i] = nh;
		memcpy(&w->v6->saddr6[i], ip + 8, 16);
		memcpy(&w->v6->daddr6[i], ip + 24, 16);
		v->sport[i]  = rd16(l4);
		v->dport[i]  = rd16(l4 + 2);
		v->ttl[i]    = ip[7];
		v->l4_off[i] = L4_OFF6;
		v->ip_len[i] = (uint16_t)(IP6_HLEN + pl);
		if (__builtin_expect(v->trace[i] >= 0, 0)) {
			struct eng_trace_rec *r = &w->tr[v->trace[i]];

			r->proto    = nh;
			r->family   = 6;
			memcpy(r->in_saddr6, ip + 8, 16);
			memcpy(r->in_daddr6, ip + 24, 16);
			r->in_sport = v->sport[i];
			r->in_dport = v->dport[i];
		}
		enq(w, ENG_N_SESSION6, i);
	}
}

/* ---- session6 -------------------------------------------------------------- */

static inline void key6_of(const struct eng_worker *w, uint32_t i, struct eng_key6 *k)
{
	const struct eng_vec *v = &w->v;

	k->saddr = w->v6->saddr6[i];
	k->daddr = w->v6->daddr6[i];
	k->sport = v->sport[i];
	k->dport = v->dport[i];
	k->proto = v->proto[i];
}

static inline void peer_key6(const struct eng_view6 *e, uint8_t proto, struct eng_key6 *k)
{
	k->saddr = e->nat_daddr;
	k->daddr = e->nat_saddr;
	k->sport = e->nat_dport;
	k->dport = e->nat_sport;
	k->proto = proto;
}

static inline int key6_same(const struct eng_key6 *a, const struct eng_key6 *b)
{
	return a->sport == b->sport && a->dport == b->dport && eng_ip6_eq(&a->saddr, &b->saddr) &&
	       eng_ip6_eq(&a->daddr, &b->daddr);
}

static void sess6_hit(struct eng_worker *w, const struct eng_table *t, uint32_t i, uint64_t now)
{
	struct eng_vec	     *v	   = &w->v;
	struct eng_sessions6 *s	   = &w->e->sessions6;
	struct eng_view6     *e	   = &w->v6->view6[i];
	struct eng_sess6     *slot = &s->slots[e->slot];
	int		      exp  = w->ctx6 != NULL;
	struct eng_key6	      key;
	uint8_t		      st;

	key6_of(w, i, &key);
	st = state_after(e->state, e->dir, key.proto, v->tcp_flags[i]);
	if (st != e->state) {
		struct eng_key6	 pk, back;
		struct eng_view6 pv;
		int64_t		 p;

		atomic_store_explicit(&slot->state, st, memory_order_relaxed);
		peer_key6(e, key.proto, &pk);
		p = eng_sess6_lookup(s, eng_hash6(s, &pk), &pk, &pv);
		if (p >= 0) {
			peer_key6(&pv, key.proto, &back);
			if (key6_same(&back, &key)) {
				struct eng_sess6 *ps = &s->slots[p];

				atomic_store_explicit(&ps->state, st, memory_order_relaxed);
				atomic_store_explicit(&ps->expires,
						      now + eng_ct_lifetime(t, key.proto, st),
						      memory_order_relaxed);
				if (exp) {
					ps->export_at_s = export_at(t, key.proto, st, now);
					eng_ct6_queue(w, ps, now);
				}
			}
		}
		e->state       = st;
		e->export_at_s = 0; /* write ours too */
	}
	atomic_store_explicit(&slot->expires, now + eng_ct_lifetime(t, key.proto, st),
			      memory_order_relaxed);
	if (exp && (uint32_t)(now / 1000000000ULL) >= e->export_at_s) {
		slot->export_at_s = export_at(t, key.proto, st, now);
		eng_ct6_queue(w, slot, now);
	}
	enq(w, ENG_N_NAT6, i);
}

static void node_session6(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
			  uint32_t n, uint64_t now)
{
	struct eng_vec	     *v = &w->v;
	struct eng_sessions6 *s = &w->e->sessions6;

	for (uint32_t k = 0; k < n; k++) {
		uint32_t	i = in[k];
		struct eng_key6 key;

		key6_of(w, i, &key);
		v->hash[i] = eng_hash6(s, &key);
		/* both lines of the entry: the key on the first, the rewrite
		 * and the deadline across both */
		__builtin_prefetch(&s->slots[v->hash[i] & s->mask]);
		__builtin_prefetch((const char *)&s->slots[v->hash[i] & s->mask] + 64);
	}
	for (uint32_t k = 0; k < n; k++) {
		uint32_t	  i = in[k];
		struct eng_key6	  key;
		struct eng_view6 *e = &w->v6->view6[i];

		key6_of(w, i, &key);
		if (w->pol_on && w->pol) {
			const struct eng_port *rp = port_of(t, v->rx_port[i]);

			if (rp && (rp->flags & ENG_PORT_F_POD) &&
			    eng_pol_unknown_isolated6(w->pol, rp->ifindex, &key.saddr,
						      ENG_IPC_F_EGRESS)) {
				to_drop(w, i, ENG_R_POLICY_IPV6);
				continue;
			}
		}
		if (eng_sess6_lookup(s, v->hash[i], &key, e) < 0) {
			e->dir = 0;
			enq(w, ENG_N_LB6, i);
			continue;
		}
		if (e->expires < now) {
			struct eng_key6	 pk;
			struct eng_view6 pv;

			peer_key6(e, key.proto, &pk);
			if (eng_sess6_lookup(s, eng_hash6(s, &pk), &pk, &pv) < 0 ||
			    pv.expires < now) {
				e->dir = 0;
				enq(w, ENG_N_LB6, i);
				continue;
			}
		}
		if (w->pol_on) {
			/* as session: one compare for the policy in force */
			if (w->pol && e->pol == w->pol->epoch)
				sess6_hit(w, t, i, now);
			else if (w->pol && e->pol == (w->pol->epoch | ENG_POL_DENIED))
				to_drop(w, i, ENG_R_POLICY_DENIED);
			else
				enq(w, ENG_N_POLICY6, i);
			continue;
		}
		sess6_hit(w, t, i, now);
	}
}

/* ---- lb6 ----------------------------------------------------------------------- */

static void view6_of(struct eng_view6 *e, const struct eng_sess6 *s, uint32_t slot)
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

static inline void affinity6_key(const struct eng_frontend *fe, const eng_ip6 *client,
				 struct eng_key6 *ak)
{
	memset(ak, 0, sizeof(*ak));
	ak->saddr    = *client;
	ak->daddr.w[0] = fe->svc_id;
	ak->proto    = PROTO_AFFINITY;
}

static int affinity6_get(struct eng_sessions6 *s, const struct eng_frontend *fe,
			 const eng_ip6 *client, int local_only, uint64_t now,
			 struct eng_backend6 *out)
{
	struct eng_key6	 ak;
	struct eng_view6 av;

	affinity6_key(fe, client, &ak);
	if (eng_sess6_lookup(s, eng_hash6(s, &ak), &ak, &av) < 0 || av.expires < now)
		return 0;
	if (local_only && !(av.flags & ENG_BE_F_LOCAL))
		return 0;
	out->addr  = av.nat_daddr;
	out->port  = av.nat_dport;
	out->flags = av.flags;
	return 1;
}

static void affinity6_put(struct eng_sessions6 *s, const struct eng_frontend *fe,
			  const eng_ip6 *client, const struct eng_backend6 *be, uint64_t now)
{
	struct eng_key6	 ak;
	struct eng_sess6 a;

	affinity6_key(fe, client, &ak);
	memset(&a, 0, sizeof(a));
	a.dir	    = ENG_DIR_AFFINITY;
	a.flags	    = be->flags;
	a.nat_daddr = be->addr;
	a.nat_dport = be->port;
	a.svc_id    = fe->svc_id;
	a.out_port  = 0xff;
	atomic_store(&a.expires, now + (uint64_t)fe->affinity_s * 1000000000ULL);
	pthread_spin_lock(&s->lock);
	eng_sess6_insert_hashed_locked(s, eng_hash6(s, &ak), &ak, &a);
	pthread_spin_unlock(&s->lock);
}

static inline void reply_key6(const struct eng_key6 *fwd, const struct eng_lb6 *to,
			      struct eng_key6 *rk)
{
	rk->saddr = to->daddr;
	rk->daddr = to->saddr;
	rk->sport = to->dport;
	rk->dport = to->sport;
	rk->proto = fwd->proto;
}

static int reply6_free(struct eng_sessions6 *s, const struct eng_key6 *fwd,
		       const struct eng_lb6 *to, uint64_t now)
{
	struct eng_key6	 rk, back;
	struct eng_view6 rv;

	reply_key6(fwd, to, &rk);
	if (eng_sess6_lookup(s, to->rhash, &rk, &rv) < 0 || rv.expires < now)
		return 1;
	peer_key6(&rv, fwd->proto, &back);
	return key6_same(&back, fwd);
}

static int64_t create_flow6_locked(struct eng_worker *w, const struct eng_table *t, uint32_t i,
				   const struct eng_key6 *fwd, const struct eng_lb6 *to,
				   uint64_t now)
{
	struct eng_sessions6 *s = &w->e->sessions6;
	struct eng_vec	     *v = &w->v;
	struct eng_sess6      fe, re;
	struct eng_key6	      rk;
	uint64_t	      exp = now + eng_ct_lifetime(t, fwd->proto, 0);
	uint32_t	      ex  = export_at(t, fwd->proto, 0, now);
	int64_t		      fs, rs;

	if (!reply6_free(s, fwd, to, now))
		return -2;
	reply_key6(fwd, to, &rk);
	memset(&re, 0, sizeof(re));
	re.dir	     = ENG_CT_DIR_REPLY;
	re.flags     = to->flags;
	re.nat_saddr = fwd->daddr;
	re.nat_sport = fwd->dport;
	re.nat_daddr = fwd->saddr;
	re.nat_dport = fwd->sport;
	re.svc_id    = to->svc_id;
	re.out_port  = v->rx_port[i];
	re.export_at_s = ex;
	memcpy(re.dmac, v->data[i] + 6, 6);
	memcpy(re.smac, v->data[i], 6);
	atomic_store_explicit(&re.expires, exp, memory_order_relaxed);

	memset(&fe, 0, sizeof(fe));
	fe.dir	     = ENG_CT_DIR_FWD;
	fe.flags     = to->flags;
	fe.nat_saddr = to->saddr;
	fe.nat_sport = to->sport;
	fe.nat_daddr = to->daddr;
	fe.nat_dport = to->dport;
	fe.svc_id    = to->svc_id;
	fe.out_port  = 0xff;
	fe.export_at_s = ex;
	atomic_store_explicit(&fe.expires, exp, memory_order_relaxed);
	atomic_store_explicit(&re.pol, to->pol, memory_order_relaxed);
	atomic_store_explicit(&fe.pol, to->pol, memory_order_relaxed);

	rs = eng_sess6_insert_hashed_locked(s, to->rhash, &rk, &re);
	if (rs < 0)
		return -1;
	fs = eng_sess6_insert_hashed_locked(s, v->hash[i], fwd, &fe);
	if (fs < 0) {
		eng_sess6_delete_locked(s, (uint32_t)rs);
		return -1;
	}
	if (w->ctx6) {
		eng_ct6_queue(w, &s->slots[rs], now);
		eng_ct6_queue(w, &s->slots[fs], now);
	}
	return fs;
}

static inline void pick_snat_port6(struct eng_worker *w, const struct eng_table *t,
				   const struct eng_key6 *fwd, struct eng_lb6 *to)
{
	struct eng_key6 rk;

	to->sport =
		htons((uint16_t)(t->snat_min + rnd(w) % ((uint32_t)t->snat_max - t->snat_min + 1)));
	reply_key6(fwd, to, &rk);
	to->rhash = eng_hash6(&w->e->sessions6, &rk);
}

/* lb6, pass 1 (as lb_decide(): a flow the kernel path opened is adopted
 * from bpfproxy_ct6). */
static int lb6_decide(struct eng_worker *w, const struct eng_table *t, uint32_t i, uint64_t now,
		      uint32_t *adopted)
{
	struct eng_vec		   *v	     = &w->v;
	struct eng_sessions6	   *s	     = &w->e->sessions6;
	const struct eng_port	   *rp	     = port_of(t, v->rx_port[i]);
	int			    from_pod = rp && (rp->flags & ENG_PORT_F_POD);
	const struct eng_frontend6 *fe6;
	const struct eng_frontend  *fe;
	const struct eng_neigh6	   *nb;
	struct eng_backend6	    be;
	struct eng_key6		    key, rk;
	struct eng_lb6		   *to = &w->v6->lb6[i];
	uint32_t		    start, cnt, total;
	int			    local_only;

	key6_of(w, i, &key);
	fe6 = eng_fe6_lookup(t, &key.daddr, key.dport, key.proto);
	if (!fe6) {
		to_drop(w, i, ENG_R_NO_FRONTEND);
		return 0;
	}
	fe    = &fe6->f;
	total = (uint32_t)fe->cluster_count + fe->local_count;
	if (total && w->ctx6 && (!opens_flow(key.proto, v->tcp_flags[i]) || key.proto == PROTO_UDP) &&
	    *adopted < ADOPT_PER_VECTOR) {
		struct eng_sess6 a;
		int64_t		 fs = -1;

		(*adopted)++;
		if (eng_ct6_adopt_lookup(w, &key, now, &a)) {
			pthread_spin_lock(&s->lock);
			fs = eng_sess6_insert_hashed_locked(s, v->hash[i], &key, &a);
			pthread_spin_unlock(&s->lock);
		}
		if (fs >= 0) {
			view6_of(&w->v6->view6[i], &s->slots[fs], (uint32_t)fs);
			enq(w, w->pol_on ? ENG_N_POLICY6 : ENG_N_NAT6, i);
			return 0;
		}
	}
	if (!opens_flow(key.proto, v->tcp_flags[i])) {
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
	if (!fe->affinity_s || !affinity6_get(s, fe, &key.saddr, local_only, now, &be)) {
		uint32_t ord;

		if (fe->flags & ENG_FE_F_MAGLEV) {
			/* bpf/lib/lb6.h: the addresses folded to 32 bits, then
			 * the IPv4 flow hash, so both paths pick alike */
			uint32_t m  = local_only ? fe->maglev_m_local : fe->maglev_m;
			uint32_t at = fe->maglev_start + (local_only ? fe->maglev_m : 0);
			uint32_t h  = eng_maglev_hash(t->maglev_seed, eng_ip6_fold(&key.saddr),
						      eng_ip6_fold(&key.daddr), key.sport,
						      key.dport, key.proto);
			ord	    = t->maglev[at + h % m];
		} else {
			ord = rnd(w) % cnt;
		}
		be = t->bes6[start + ord];
	}
	if (fe->affinity_s)
		affinity6_put(s, fe, &key.saddr, &be, now);

	nb = eng_neigh6_lookup(t, &be.addr);
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
	if (from_pod && eng_ip6_eq(&be.addr, &key.saddr)) {
		if (eng_ip6_zero(&t->hairpin6)) {
			to_drop(w, i, ENG_R_NO_SNAT_SOURCE);
			return 0;
		}
		to->saddr = t->hairpin6;
		to->flags |= ENG_CT_F_SNAT | ENG_CT_F_HAIRPIN;
	} else if (!from_pod && (fe->flags & ENG_FE_F_EXTERNAL) && !(be.flags & ENG_BE_F_LOCAL)) {
		if (eng_ip6_zero(&nb->snat)) {
			to_drop(w, i, ENG_R_NO_SNAT_SOURCE);
			return 0;
		}
		to->saddr = nb->snat;
		to->flags |= ENG_CT_F_SNAT;
	}
	if (to->flags & ENG_CT_F_SNAT) {
		pick_snat_port6(w, t, &key, to);
	} else {
		reply_key6(&key, to, &rk);
		to->rhash = eng_hash6(s, &rk);
	}
	__builtin_prefetch(&s->slots[to->rhash & s->mask]);
	return 1;
}

/* lb6, pass 2: both entries of each new flow (pend: decided by pass 1 and,
 * with policy on, allowed by policy6). -> nat6 | drop */
static void lb6_commit(struct eng_worker *w, const struct eng_table *t, const uint16_t *pend,
		       uint32_t m, uint64_t now)
{
	struct eng_sessions6 *s = &w->e->sessions6;

	for (uint32_t k = 0; k < m;) {
		uint32_t end = k + 16 < m ? k + 16 : m;

		pthread_spin_lock(&s->lock);
		for (; k < end; k++) {
			uint32_t	i  = pend[k];
			struct eng_lb6 *to = &w->v6->lb6[i];
			struct eng_key6 key;
			int64_t		fs;

			key6_of(w, i, &key);
			fs = create_flow6_locked(w, t, i, &key, to, now);
			if (fs == -2 && !(to->flags & ENG_CT_F_SNAT))
				to->flags |= ENG_CT_F_SNAT;
			for (int tries = 0; fs == -2 && tries < SNAT_PORT_TRIES; tries++) {
				pick_snat_port6(w, t, &key, to);
				fs = create_flow6_locked(w, t, i, &key, to, now);
			}
			if (fs == -2) {
				to_drop(w, i, ENG_R_NAT_PORTS);
				continue;
			}
			if (fs < 0) {
				to_drop(w, i, ENG_R_SESSION_FULL);
				continue;
			}
			view6_of(&w->v6->view6[i], &s->slots[fs], (uint32_t)fs);
			enq(w, ENG_N_NAT6, i);
		}
		pthread_spin_unlock(&s->lock);
	}
}

static void node_lb6(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
		     uint32_t n, uint64_t now)
{
	uint32_t m = 0, adopted = 0;
	uint16_t pend[ENG_VEC_MAX];

	/* with policy on, a new flow's entries are made once policy6 allowed it */
	for (uint32_t k = 0; k < n; k++) {
		if (!lb6_decide(w, t, in[k], now, &adopted))
			continue;
		if (w->pol_on)
			enq(w, ENG_N_POLICY6, in[k]);
		else
			pend[m++] = in[k];
	}
	lb6_commit(w, t, pend, m, now);
}

/* ---- policy6 ------------------------------------------------------------------- */

static inline void pol_flow6_of(const struct eng_key6 *k, const struct eng_view6 *e,
				struct eng_pol_flow6 *f)
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

static void pol6_record(struct eng_worker *w, uint32_t i, const struct eng_key6 *key,
			uint16_t pol)
{
	struct eng_sessions6 *s = &w->e->sessions6;
	struct eng_view6     *e = &w->v6->view6[i];
	struct eng_key6	      pk, back;
	struct eng_view6      pv;
	int64_t		      p;

	atomic_store_explicit(&s->slots[e->slot].pol, pol, memory_order_relaxed);
	e->pol = pol;
	peer_key6(e, key->proto, &pk);
	p = eng_sess6_lookup(s, eng_hash6(s, &pk), &pk, &pv);
	if (p < 0)
		return;
	peer_key6(&pv, key->proto, &back);
	if (key6_same(&back, key))
		atomic_store_explicit(&s->slots[p].pol, pol, memory_order_relaxed);
}

static void node_policy6(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
			 uint32_t n, uint64_t now)
{
	const struct eng_policy *p = w->pol;
	uint32_t		 m = 0;
	uint16_t		 pend[ENG_VEC_MAX];

	for (uint32_t k = 0; k < n; k++) {
		uint32_t	     i = in[k];
		struct eng_pol_flow6 f;
		struct eng_key6	     key;
		enum eng_reason	     r;

		if (!p) {
			to_drop(w, i, ENG_R_POLICY_NOT_LOADED);
			continue;
		}
		key6_of(w, i, &key);
		if (w->v6->view6[i].dir == 0) {
			const struct eng_lb6 *to = &w->v6->lb6[i];

			f.client = key.saddr;
			f.seen	 = to->saddr;
			f.server = to->daddr;
			f.dport	 = to->dport;
			f.proto	 = key.proto;
			f.self	 = !!(to->flags & ENG_CT_F_HAIRPIN);
			r	 = eng_pol_check6(p, &f);
			if (r != ENG_R_NONE) {
				to_drop(w, i, r);
				continue;
			}
			w->v6->lb6[i].pol = p->epoch;
			pend[m++]     = (uint16_t)i;
			continue;
		}
		pol_flow6_of(&key, &w->v6->view6[i], &f);
		r = eng_pol_check6(p, &f);
		pol6_record(w, i, &key, (uint16_t)(p->epoch | (r != ENG_R_NONE ? ENG_POL_DENIED : 0)));
		if (r != ENG_R_NONE) {
			to_drop(w, i, r);
			continue;
		}
		sess6_hit(w, t, i, now);
	}
	lb6_commit(w, t, pend, m, now);
}

/* ---- reject (IPv6) ---------------------------------------------------------------- */

/* Sixteen bytes as 32-bit words into a 64-bit one's complement sum. */
static inline uint64_t sum16b(const uint8_t *p)
{
	return (uint64_t)rd32(p) + rd32(p + 4) + rd32(p + 8) + rd32(p + 12);
}

/* A 64-bit sum of 32-bit words folded to a 32-bit sum of 16-bit words
 * (csum_fold32() takes it from there). */
static inline uint32_t fold64(uint64_t s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return (uint32_t)(s & 0xffff) + (uint32_t)(s >> 16);
}

/* The sum of the IPv6 pseudo header (RFC 8200 8.1), words in memory order. */
static inline uint32_t pseudo6_sum(const uint8_t *src, const uint8_t *dst, uint32_t len,
				   uint8_t nh)
{
	return fold64(sum16b(src) + sum16b(dst)) + htons((uint16_t)len) +
	       htons((uint16_t)(len >> 16)) + ((uint32_t)nh << 8);
}

static void reject6_ip(uint8_t *ip, const uint8_t *src, const uint8_t *dst, uint8_t nh,
		       uint16_t plen)
{
	uint8_t s[16], d[16];

	memcpy(s, src, 16);
	memcpy(d, dst, 16);
	memset(ip, 0, IP6_HLEN);
	ip[0] = 0x60;
	wr16(ip + 4, htons(plen));
	ip[6] = nh;
	ip[7] = 64;
	memcpy(ip + 8, s, 16);
	memcpy(ip + 24, d, 16);
}

/* 1: answered in place (v->len set), 0: dropped (reason queued). */
static int reject6(struct eng_worker *w, uint32_t i)
{
	struct eng_vec *v = &w->v;
	uint8_t	       *d = v->data[i], *ip = d + ETH_HLEN6;
	uint8_t		src[16], dst[16];

	memcpy(src, ip + 8, 16);
	memcpy(dst, ip + 24, 16);
	if (v->proto[i] == PROTO_TCP) {
		uint8_t *th	 = d + L4_OFF6;
		uint8_t	 fl	 = th[13];
		uint32_t seq	 = ntohl(rd32(th + 4)), ack = rd32(th + 8);
		uint32_t payload = v->ip_len[i] - IP6_HLEN - (th[12] >> 4) * 4u;
		uint16_t sp = v->sport[i], dp = v->dport[i];

		if (fl & TCP_RST) {
			to_drop(w, i, ENG_R_RST_NOT_ANSWERED);
			return 0;
		}
		swap_macs(d);
		reject6_ip(ip, dst, src, PROTO_TCP, 20);
		memset(th, 0, 20);
		wr16(th, dp);
		wr16(th + 2, sp);
		th[12] = 5 << 4;
		if (fl & TCP_ACK) {
			wr32(th + 4, ack);
			th[13] = TCP_RST;
		} else {
			wr32(th + 8, htonl(seq + payload + !!(fl & TCP_SYN) + !!(fl & TCP_FIN)));
			th[13] = TCP_RST | TCP_ACK;
		}
		wr16(th + 16, csum_fold32(csum_add(th, 20, pseudo6_sum(dst, src, 20, PROTO_TCP))));
		v->len[i] = L4_OFF6 + 20;
	} else {
		/* ICMPv6 destination unreachable, port unreachable (RFC 4443):
		 * as much of the packet as fits in the minimum MTU */
		uint32_t q = v->ip_len[i], total;
		uint8_t *icmp = d + L4_OFF6;

		if (q > 1280 - IP6_HLEN - 8)
			q = 1280 - IP6_HLEN - 8;
		total = L4_OFF6 + 8 + q;
		if (total > v->cap[i]) {
			q     = v->cap[i] > L4_OFF6 + 8 + IP6_HLEN + 8 ? v->cap[i] - L4_OFF6 - 8 : 0;
			total = L4_OFF6 + 8 + q;
			if (!q) {
				to_drop(w, i, ENG_R_SHORT_FRAME);
				return 0;
			}
		}
		memmove(icmp + 8, ip, q);
		swap_macs(d);
		reject6_ip(ip, dst, src, 58, (uint16_t)(8 + q));
		memset(icmp, 0, 8);
		icmp[0] = 1; /* destination unreachable */
		icmp[1] = 4; /* port unreachable */
		wr16(icmp + 2, csum_fold32(csum_add(icmp, 8 + q, pseudo6_sum(dst, src, 8 + q, 58))));
		v->len[i] = (uint16_t)total;
	}
	return 1;
}

/* ---- nat6 ------------------------------------------------------------------------- */

/* As complete_partial_csum(), with the IPv6 pseudo header. */
static void complete_partial_csum6(const struct eng_vec *v, uint32_t i, uint8_t *d, uint8_t *cp)
{
	uint32_t l4len = v->ip_len[i] - IP6_HLEN;
	uint32_t sum   = pseudo6_sum(d + ETH_HLEN6 + 8, d + ETH_HLEN6 + 24, l4len, v->proto[i]);
	uint16_t c, folded;

	folded = (uint16_t)~csum_fold32(sum);
	if (__builtin_expect(rd16(cp) != folded, 1))
		return;
	wr16(cp, 0);
	c = csum_fold32(csum_add(d + L4_OFF6, l4len, sum));
	if (v->proto[i] == PROTO_UDP && c == 0)
		c = 0xffff;
	wr16(cp, c);
}

/* What replacing an address adds to a one's complement sum: ~from + to, as
 * 32-bit words (~w of a 32-bit word is the one's complement of both its
 * 16-bit halves). */
static inline uint64_t csum_diff16(const eng_ip6 *from, const eng_ip6 *to)
{
	return (uint64_t)(uint32_t)~from->w[0] + (uint32_t)~from->w[1] + (uint32_t)~from->w[2] +
	       (uint32_t)~from->w[3] + to->w[0] + to->w[1] + to->w[2] + to->w[3];
}

static void node_nat6(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
		      uint32_t n, uint64_t now)
{
	struct eng_vec *v = &w->v;

	(void)t;
	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t		i = in[k];
		const struct eng_view6 *e = &w->v6->view6[i];
		uint8_t		       *d = v->data[i], *ip = d + ETH_HLEN6, *l4 = d + L4_OFF6;
		uint8_t		       *cp = l4 + (v->proto[i] == PROTO_TCP ? 16 : 6);
		uint16_t		l4c;
		uint64_t		acc;

		if (v->ttl[i] <= 1) {
			to_drop(w, i, ENG_R_TTL);
			continue;
		}
		complete_partial_csum6(v, i, d, cp);
		/* every change into one sum, folded once (RFC 1624) */
		acc = (uint16_t)~rd16(cp);
		if (!eng_ip6_eq(&e->nat_saddr, &w->v6->saddr6[i])) {
			acc += csum_diff16(&w->v6->saddr6[i], &e->nat_saddr);
			memcpy(ip + 8, &e->nat_saddr, 16);
		}
		if (!eng_ip6_eq(&e->nat_daddr, &w->v6->daddr6[i])) {
			acc += csum_diff16(&w->v6->daddr6[i], &e->nat_daddr);
			memcpy(ip + 24, &e->nat_daddr, 16);
		}
		if (e->nat_sport != v->sport[i]) {
			acc += (uint16_t)~v->sport[i] + (uint32_t)e->nat_sport;
			wr16(l4, e->nat_sport);
		}
		if (e->nat_dport != v->dport[i]) {
			acc += (uint16_t)~v->dport[i] + (uint32_t)e->nat_dport;
			wr16(l4 + 2, e->nat_dport);
		}
		l4c = csum_fold32(fold64(acc));
		ip[7] = (uint8_t)(v->ttl[i] - 1); /* hop limit: in no checksum */
		if (v->proto[i] == PROTO_UDP && l4c == 0)
			l4c = 0xffff;
		wr16(cp, l4c);
		enq(w, ENG_N_L2_6, i);
	}
}

/* ---- l2-rewrite6 ------------------------------------------------------------------ */

static void node_l2_6(struct eng_worker *w, const struct eng_table *t, const uint16_t *in,
		      uint32_t n, uint64_t now)
{
	struct eng_vec *v = &w->v;

	(void)now;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t		i = in[k];
		const struct eng_view6 *e = &w->v6->view6[i];
		uint8_t		       *d = v->data[i];

		if (e->dir == ENG_CT_DIR_REPLY && e->out_port != 0xff) {
			if (e->out_port >= t->nports) {
				to_drop(w, i, ENG_R_NO_TX_PORT);
				continue;
			}
			memcpy(d, e->dmac, 6);
			memcpy(d + 6, e->smac, 6);
			v->out_port[i] = e->out_port;
		} else {
			const struct eng_neigh6 *nb = eng_neigh6_lookup(t, &e->nat_daddr);

			if (!nb) {
				to_drop(w, i, ENG_R_NO_NEIGHBOUR);
				continue;
			}
			memcpy(d, nb->mac, 6);
			memcpy(d + 6, t->ports[nb->port].mac, 6);
			v->out_port[i] = nb->port;
		}
		if (w->pol_on && w->pol && (t->ports[v->out_port[i]].flags & ENG_PORT_F_POD) &&
		    eng_pol_unknown_isolated6(w->pol, t->ports[v->out_port[i]].ifindex,
					      &e->nat_daddr, ENG_IPC_F_INGRESS)) {
			to_drop(w, i, ENG_R_POLICY_IPV6);
			continue;
		}
		enq(w, ENG_N_OUTPUT, i);
	}
}
