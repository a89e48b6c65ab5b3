/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The service datapath's tunnel steps (lib/tunnel.h says what the modes
 * are). Included by lib/service.h after translate(), which these use:
 *   tun_ingress_new()  a new external flow to another node's endpoint
 *   tun_backend_new()  a new flow that came through the tunnel
 *   tun_ct_forward()   a packet of a tunnelled flow
 */
#ifndef BPFPROXY_TUNNEL_SVC_H
#define BPFPROXY_TUNNEL_SVC_H

#include "tunnel.h"

/* A new flow from outside to an external frontend whose chosen endpoint is
 * on another node: tunnelled as it came when the mode says so and the
 * endpoint's node is known; else TUN_NOT_TUNNELLED (SNAT, as before). */
static __always_inline int tun_ingress_new(struct __sk_buff *skb, struct pkt *p,
					   const struct fe_value *fe, const struct backend *be,
					   __u64 now)
{
	struct tun_cfg	     *c	 = tun_config();
	struct tun_ep_key     ek = {.addr = be->addr};
	struct tun_ep	     *ep;
	struct ct_tun	      tv = {};
	struct bpf_fib_lookup fib;
	__u32		      mode;
	int		      rc, err;

	if (!(fe->flags & FE_F_EXTERNAL))
		return TUN_NOT_TUNNELLED;
	mode = tun_mode_for(c, p->tuple.saddr);
	ep   = mode == EXT_M_SNAT ? NULL : bpf_map_lookup_elem(&bpfproxy_tun_eps, &ek);
	if (!c || !ep || !ep->node) {
		tun_count(skb, TUN_C_NEW_SNAT);
		return TUN_NOT_TUNNELLED;
	}
	tv.peer		= ep->node;
	tv.local	= c->local;
	tv.backend	= be->addr;
	tv.backend_port = be->port;
	tv.role		= TUN_R_INGRESS;
	tv.mode		= mode;
	rc		= tun_route(skb, p, tv.local, tv.peer, &fib);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return tun_too_big(skb, p, &fib); /* no state for a packet that does not go */
	/* Nothing is translated here: both halves keep the tuple as sent. */
	err = ct_create(&p->tuple, &p->tuple, CT_F_EXTERNAL | CT_F_TUNNEL, fe->svc_id, 0, now);
	if (err)
		return drop(skb, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	tun_ct_record(&p->tuple, &p->tuple, &tv);
	tun_count(skb, mode == EXT_M_DSR ? TUN_C_NEW_DSR : TUN_C_NEW_TUNNEL);
	trace_step(TRACE_NAT, CT_F_EXTERNAL | CT_F_TUNNEL, 0, 0, tv.local, 0, tv.peer, TUN_PORT, 0);
	monitor_flow_new(skb, MON_HOOK_DATA, &p->tuple, &p->tuple, fe->svc_id,
			 CT_F_EXTERNAL | CT_F_TUNNEL);
	return tun_encap_send(skb, &p->tuple, tv.local, tv.peer, tun_vni_of(mode), &fib, rc);
}

/* The frontend of a packet that came through the tunnel: as addressed, or
 * the NodePort wildcard (the address is the ingress node's, not ours). */
static __always_inline struct fe_value *tun_lb_lookup(const struct ct_key *t)
{
	struct fe_key	 k = {.addr = t->daddr, .port = t->dport, .proto = t->proto};
	struct fe_value *fe;

	fe = bpf_map_lookup_elem(&bpfproxy_fe, &k);
	if (fe)
		return fe;
	k.addr = 0;
	fe     = bpf_map_lookup_elem(&bpfproxy_fe, &k);
	return fe && (fe->flags & FE_F_NODEPORT) ? fe : NULL;
}

/* A packet that came through the tunnel from node 'peer' (to our address
 * 'local', VNI vni) and opens no flow we know: a new flow to one of our
 * own endpoints, client address kept. */
static __always_inline int tun_backend_new(struct __sk_buff *skb, struct pkt *p, __be32 peer,
					   __be32 local, __u32 vni, __u64 now)
{
	struct backend	 be = {};
	struct fe_value *fe;
	struct ct_key	 to;
	struct ct_tun	 tv = {};
	enum reason	 r;
	__u8		 flags = CT_F_EXTERNAL | CT_F_TUNNEL;
	__u32		 pol_gen;
	int		 err;

	if (!ct_opens_flow(p->tuple.proto, p->tcp_flags))
		return drop(skb, REASON_TUN_NO_FLOW);
	fe = tun_lb_lookup(&p->tuple);
	if (!fe || !(fe->flags & FE_F_EXTERNAL))
		return drop(skb, REASON_TUN_NO_FLOW);
	/* The ingress node chose this node; any of our endpoints serves. */
	r = lb_select(fe, 1, &p->tuple, now, &be);
	trace_step(TRACE_BACKEND, r, 1, be.flags, be.addr, bpf_ntohs(be.port), 0, 0, 0);
	if (r != REASON_NONE)
		return drop(skb, r == REASON_NO_ENDPOINTS ? REASON_NO_LOCAL_ENDPOINTS : r);

	to.saddr  = p->tuple.saddr;
	to.sport  = p->tuple.sport;
	to.daddr  = be.addr;
	to.dport  = be.port;
	to.proto  = p->tuple.proto;
	to.pad[0] = to.pad[1] = to.pad[2] = 0;
	{
		struct node_ip_key nk = {.addr = be.addr};

		if (bpf_map_lookup_elem(&bpfproxy_node_ips, &nk))
			flags |= CT_F_HOST_BE;
	}
	if (!ct_reply_free(&p->tuple, &to, now)) {
		flags |= CT_F_SNAT;
		if (snat_pick_port(&p->tuple, &to, now))
			return drop(skb, REASON_NAT_PORTS);
	}
	r = policy_service_new(&p->tuple, &to, flags, &pol_gen);
	if (r != REASON_NONE)
		return drop(skb, r);
	err = ct_create(&p->tuple, &to, flags, fe->svc_id, pol_gen, now);
	if (err)
		return drop(skb, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	tv.peer		= peer;
	tv.local	= local;
	tv.backend	= be.addr;
	tv.backend_port = be.port;
	tv.role		= TUN_R_BACKEND;
	tv.mode		= vni == TUN_VNI_DSR ? EXT_M_DSR : EXT_M_TUNNEL;
	tun_ct_record(&p->tuple, &to, &tv);
	tun_count(skb, TUN_C_NEW_REMOTE);
	trace_step(TRACE_NAT, flags, 0, 0, to.saddr, bpf_ntohs(to.sport), to.daddr,
		   bpf_ntohs(to.dport), 0);
	monitor_flow_new(skb, MON_HOOK_DATA, &p->tuple, &to, fe->svc_id, flags);
	return translate(skb, p, &to);
}

/* The backend's node, a client's packet of a flow it took through the
 * tunnel: when the packet came another way than the record says (the
 * client's packets moved to another ingress node, lib/service.h
 * svc_midflow_adoptable()), the replies follow them, as Calico does when
 * its tunnel source changes: through the node the packet came from now
 * (its VNI says Tunnel or DSR), or, when the client reaches this node
 * itself, straight back to it (as in DSR). The old ingress node may be
 * gone (a common reason for the move); replies through it would be lost.
 * Only packets through the tunnel from a node (tun_rx() checked the
 * source) or from outside move a flow. 'via': the sending node (0: not
 * tunnelled), 'local' and 'vni' of its outer header. Kept to scalars and
 * the caller's copy of the record: the data program's stack is near the
 * verifier's limit. */
static __always_inline void tun_follow_ingress(struct __sk_buff *skb, const struct ct_key *fwd,
					       struct ct_key *to, struct ct_tun *tv, __be32 via,
					       __be32 local, __u32 vni)
{
	__be32 a;
	__be16 port;

	__u8 mode = via && vni != TUN_VNI_DSR ? EXT_M_TUNNEL : EXT_M_DSR;

	if (!via)
		local = tv->local, via = tv->peer;
	if (via == tv->peer && local == tv->local && mode == tv->mode)
		return;
	tv->peer  = via;
	tv->local = local;
	tv->mode  = mode;
	if (cfg_trace) /* lib/trace.h: no map writes */
		return;
	/* Both halves (as tun_ct_record()); the reply half's key is 'to'
	 * reversed, in place and back: no second key on the stack. */
	bpf_map_update_elem(&bpfproxy_ct_tun, fwd, tv, BPF_ANY);
	a	  = to->saddr;
	to->saddr = to->daddr;
	to->daddr = a;
	port	  = to->sport;
	to->sport = to->dport;
	to->dport = port;
	bpf_map_update_elem(&bpfproxy_ct_tun, to, tv, BPF_ANY);
	to->daddr = to->saddr;
	to->saddr = a;
	to->dport = to->sport;
	to->sport = port;
	tun_count(skb, TUN_C_MOVED);
}

/* A packet of a tunnelled flow (conntrack hit with CT_F_TUNNEL), 'to' its
 * entry's rewrite; how it arrived: from a pod, or from outside through the
 * tunnel from node 'via' (0: not tunnelled) to our 'local' with 'vni'. */
static __always_inline int tun_ct_forward(struct __sk_buff *skb, struct pkt *p,
					  const struct ct_value *ct, struct ct_key *to,
					  int from_pod, __be32 via, __be32 local, __u32 vni)
{
	struct ct_tun *tvp = tun_ct_lookup(&p->tuple);
	struct ct_tun  tv;

	if (!tvp)
		return translate(skb, p, to); /* its record is gone: as a plain flow */
	tv = *tvp;
	if (tv.role == TUN_R_INGRESS && ct->dir == CT_DIR_FWD)
		return tun_forward_as_is(skb, p, &tv);
	if (tv.role == TUN_R_BACKEND && ct->dir == CT_DIR_FWD && !from_pod)
		tun_follow_ingress(skb, &p->tuple, to, &tv, via, local, vni);
	if (tv.role == TUN_R_BACKEND && ct->dir == CT_DIR_REPLY) {
		if (tv.mode == EXT_M_TUNNEL)
			return tun_reply_encap(skb, p, &tv, to);
		tun_count(skb, TUN_C_DSR_REPLY);
	}
	return translate(skb, p, to);
}

#endif /* BPFPROXY_TUNNEL_SVC_H */
