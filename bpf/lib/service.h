/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The service datapath shared by the TC hooks:
 *   1. conntrack hit  -> apply the entry's rewrite (DNAT, SNAT or reverse)
 *   2. ICMP error     -> translate it if it quotes a tracked flow
 *   3. frontend hit   -> choose a backend, create conntrack, DNAT (+SNAT)
 *   4. anything else  -> untouched
 * While draining (lib/mode.h, rollback to kube-proxy) step 3 passes the
 * packet to the stack instead: kube-proxy's rules take new flows. On
 * standby (taking over, lib/mode.h) every packet passes untouched.
 * 'from_pod' says which side the packet entered from: traffic from pods is
 * internal (internalTrafficPolicy) and must carry its pod's address (lib/
 * pod.h), traffic from data interfaces external (externalTrafficPolicy on
 * NodePort / LoadBalancer / externalIPs).
 *
 * service_host_reply() is the egress side: replies that the node itself
 * sends as a service backend (host-network endpoints) leave through the
 * stack, not through our ingress hooks, and are reverse-translated there.
 */
#ifndef BPFPROXY_SERVICE_H
#define BPFPROXY_SERVICE_H

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "drop.h"
#include "fib.h"
#include "lb.h"
#include "mode.h"
#include "monitor.h"
#include "lbsrc.h"
#include "nat.h"
#include "parse.h"
#include "pod.h"
#include "policy.h"
#include "reject.h"
#include "trace.h"
#include "tunnel.h"

#define SNAT_PORT_TRIES 8

/* Find a source port in the SNAT range (never the node's ephemeral range,
 * where its own connections live unseen by our conntrack) on 'to->saddr'
 * whose reply tuple is free. */
static __always_inline int snat_pick_port(const struct ct_key *fwd, struct ct_key *to, __u64 now)
{
	__u32 range = (__u32)cfg_snat_port_max - cfg_snat_port_min + 1;
	int   i;

	for (i = 0; i < SNAT_PORT_TRIES; i++) {
		to->sport = bpf_htons(cfg_snat_port_min + bpf_get_prandom_u32() % range);
		if (ct_reply_free(fwd, to, now))
			return 0;
	}
	return -1;
}

/* service_icmp(): not an error about a tracked flow (the caller decides). */
#define ICMP_UNRELATED (-2)

static __always_inline int service_icmp(struct __sk_buff *skb, struct pkt *p, __u64 now)
{
	struct icmp_quote e = {};
	struct ct_key	  k, inner;
	struct ct_value	 *ct;
	__be32		  osrc, odst;

	if (icmp_err_parse(skb, p, &e))
		return ICMP_UNRELATED; /* not an error about TCP/UDP, or cut short */
	ct_reverse(&e.inner, &k);
	ct = ct_lookup(&k, now);
	if (!ct)
		return ICMP_UNRELATED;
	/* About a flow tracked for policy only: nothing to translate. */
	if (ct->flags & CT_F_PLAIN)
		return TC_ACT_OK;
	if (ct->flags & CT_F_TUNNEL) {
		int rc = tun_icmp_ingress(skb, p, &k, ct);

		if (rc != TUN_NOT_TUNNELLED)
			return rc;
	}

	/* The quoted packet went the other way: it gets the reverse of the
	 * rewrite this entry applies (the key of its peer entry). */
	ct_peer_key(ct, e.inner.proto, &inner);
	odst = ct->nat_daddr;
	/* An error from the quoted destination itself speaks for the service;
	 * one from a router on the path keeps the router's address. */
	osrc = p->tuple.saddr == e.inner.daddr ? ct->nat_saddr : p->tuple.saddr;

	if (icmp_err_rewrite_inner(skb, &e, &inner) ||
	    rewrite_addr(skb, p, IP_SRC_OFF, p->tuple.saddr, osrc) ||
	    rewrite_addr(skb, p, IP_DST_OFF, p->tuple.daddr, odst))
		return drop(skb, REASON_REWRITE_FAILED);
	p->tuple.saddr = osrc;
	p->tuple.daddr = odst;
	if (ct->flags & CT_F_TUNNEL) {
		int rc = tun_icmp_reply(skb, p, &k, ct);

		if (rc != TUN_NOT_TUNNELLED)
			return rc;
	}
	{
		struct bpf_fib_lookup fib;
		int		      rc = fib_route(skb, p, &p->tuple, &fib);

		return fib_redirect(skb, p, &fib, rc);
	}
}

/* Rewrite the packet to 'to' and forward it. When the route's MTU is too
 * small for a DF packet, answer fragmentation-needed quoting the packet as
 * the client sent it (what a router on the path would do), so PMTU
 * discovery works through the service. */
static __always_inline int translate(struct __sk_buff *skb, struct pkt *p, const struct ct_key *to)
{
	struct bpf_fib_lookup fib;
	int		      rc = fib_route(skb, p, to, &fib);

	trace_step(TRACE_FIB, cfg_fib_redirect, 0, 0, rc, fib.ifindex, fib.mtu_result, 0, 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED && (p->frag & bpf_htons(IP_DF)))
		return icmp_reply(skb, p, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, fib.mtu_result,
				  REASON_FRAG_NEEDED);
	if (nat_rewrite(skb, p, to->saddr, to->sport, to->daddr, to->dport))
		return drop(skb, REASON_REWRITE_FAILED);
	return fib_redirect(skb, p, &fib, rc);
}

/* translate() for a packet of an established flow: the route its entry
 * cached (lib/fib.h fwd_tc_fresh()) when fresh, else translate()'s lookup,
 * whose resolved result is cached for the next packets. */
static __always_inline int translate_ct(struct __sk_buff *skb, struct pkt *p,
					const struct ct_key *to, struct ct_value *ct, __u64 now)
{
	struct bpf_fib_lookup fib;
	__u16		      len = fib_len(skb, p);
	int		      rc;

	if (fwd_tc_fresh(&ct->fwd, len, p->ttl, now)) {
		if (nat_rewrite(skb, p, to->saddr, to->sport, to->daddr, to->dport))
			return drop(skb, REASON_REWRITE_FAILED);
		return fib_redirect_cached(skb, p, &ct->fwd);
	}
	rc = fib_route(skb, p, to, &fib);
	trace_step(TRACE_FIB, cfg_fib_redirect, 0, 0, rc, fib.ifindex, fib.mtu_result, 0, 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED && (p->frag & bpf_htons(IP_DF)))
		return icmp_reply(skb, p, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, fib.mtu_result,
				  REASON_FRAG_NEEDED);
	if (nat_rewrite(skb, p, to->saddr, to->sport, to->daddr, to->dport))
		return drop(skb, REASON_REWRITE_FAILED);
	return fib_redirect_fill(skb, p, &fib, rc, &ct->fwd, len);
}

/* Tunnel and DSR (bpfExternalServiceMode): they use translate(). */
#include "tunnel_svc.h"

/* What to do with the first packet of a flow to a frontend, decided the
 * same way by TC (service_new) and XDP (bpf/xdp_data.c); only what is done
 * with the packet differs. */
enum svc_act {
	SVC_TRANSLATE = 0, /* 'to' and 'flags' are set: create conntrack, rewrite, forward */
	SVC_DROP,	   /* drop, counted under *why */
	SVC_REJECT,	   /* answer as kube-proxy's REJECT (no endpoints) */
	SVC_PASS,	   /* leave it to the stack, counted under *why */
	SVC_TUNNEL,	   /* 'to' names the endpoint: carry the packet as sent to its node
			    * (bpfExternalServiceMode Tunnel/DSR, lib/tunnel_svc.h); TC only */
};

/* A TCP packet in mid-flow (ACK, no SYN, no RST) of no flow we know, from
 * outside, to a Maglev frontend: the flow was most likely opened through
 * another ingress node (the client's route, an ECMP hash or a load
 * balancer moved it) or lost its entry. Every node's Maglev table gives it
 * the backend its first node chose, so it is taken as a new flow (as
 * Cilium and Calico do), and carried only where that keeps the client's
 * tuple: to a local endpoint, or through the tunnel (Tunnel/DSR) to the
 * endpoint's node, which still holds the flow. Random frontends, pods'
 * traffic (its ingress never moves) and SNAT would choose or rewrite
 * differently than the flow's first packet: those stay as before (left to
 * the kernel). */
static __always_inline int svc_midflow_adoptable(const struct pkt *p, const struct fe_value *fe,
						 int from_pod)
{
	return !from_pod && (fe->flags & FE_F_MAGLEV) && p->tuple.proto == IPPROTO_TCP &&
	       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_ACK;
}

/* service_new_decide() with 'midflow': whether a mid-flow packet of a Maglev
 * frontend may be taken as a new flow (svc_midflow_adoptable(); TC only:
 * XDP passes such a packet to TC, which decides again). */
static __always_inline enum svc_act service_decide(void *ctx, __u32 ifindex, struct pkt *p,
						   const struct fe_value *fe, int from_pod,
						   int midflow, __u64 now, struct ct_key *to,
						   __u8 *ct_flags, __u32 *pol_gen, enum reason *why)
{
	struct backend be = {}; /* read by the trace also when none was chosen */
	enum reason    r;
	__u8	       flags   = from_pod ? 0 : CT_F_EXTERNAL;
	int	       adopted = 0;

	/* loadBalancerSourceRanges, before anything else is decided: a client
	 * outside them learns nothing (no reject, no state). */
	if (!lb_source_allowed(fe, p->tuple.saddr)) {
		*why = REASON_LB_SOURCE_RANGE;
		return SVC_DROP;
	}

	if (!ct_opens_flow(p->tuple.proto, p->tcp_flags)) {
		/* A stray ACK, RST or FIN of no flow we know: no state for it (a
		 * flood of them must not fill conntrack). Without endpoints it is
		 * answered as kube-proxy's REJECT would; otherwise the kernel
		 * decides (its own conntrack may carry the flow, e.g. one that
		 * kube-proxy's rules NAT'd before we took over). Maglev
		 * frontends take a mid-flow packet as a new flow instead. */
		if (fe->cluster_count == 0 && fe->local_count == 0)
			return SVC_REJECT;
		*why = REASON_CT_NOT_OPENING;
		if (!midflow || !svc_midflow_adoptable(p, fe, from_pod))
			return SVC_PASS;
		adopted = 1;
	}

	r = lb_select(fe, lb_local_only(fe, from_pod), &p->tuple, now, &be);
	trace_step(TRACE_BACKEND, r, lb_local_only(fe, from_pod), be.flags, be.addr,
		   bpf_ntohs(be.port), 0, 0, 0);
	if (r == REASON_NO_ENDPOINTS)
		return SVC_REJECT;
	if (r != REASON_NONE) {
		*why = r;
		return SVC_DROP;
	}

	to->saddr  = p->tuple.saddr;
	to->sport  = p->tuple.sport;
	to->daddr  = be.addr;
	to->dport  = be.port;
	to->proto  = p->tuple.proto;
	to->pad[0] = to->pad[1] = to->pad[2] = 0;

	if (!from_pod && !(be.flags & BE_F_LOCAL) && (fe->flags & FE_F_EXTERNAL)) {
		/* bpfExternalServiceMode Tunnel / DSR (lib/tunnel_svc.h); else
		 * SNAT as kube-proxy, counted as such. */
		if (tun_carries(p->tuple.saddr, be.addr))
			return SVC_TUNNEL;
		if (adopted)
			return SVC_PASS; /* SNAT would give the endpoint another tuple */
		tun_count_n(TUN_C_NEW_SNAT, p->tot_len);
	}
	if (adopted && !(be.flags & BE_F_LOCAL))
		return SVC_PASS; /* a cluster IP routed here: it would be SNATed */
	if (from_pod && be.addr == p->tuple.saddr) {
		/* Hairpin: the pod would drop a packet from its own address. */
		to->saddr = cfg_hairpin_ip;
		flags |= CT_F_SNAT | CT_F_HAIRPIN;
	} else if (!from_pod && !(be.flags & BE_F_LOCAL)) {
		/* From outside to an endpoint on another node (eTP=Cluster, or
		 * a cluster IP someone routes to this node): SNAT to this node
		 * (kube-proxy masquerades these too), so the reply comes back
		 * through us. */
		to->saddr = fib_source_for(ctx, ifindex, be.addr, p->tuple.daddr);
		if (!to->saddr) {
			*why = REASON_NO_SNAT_SOURCE;
			return SVC_DROP;
		}
		flags |= CT_F_SNAT;
	}
	{
		/* A host-network endpoint on this node: its replies come from
		 * the stack and are translated on egress. */
		struct node_ip_key nk = {.addr = be.addr};

		if (bpf_map_lookup_elem(&bpfproxy_node_ips, &nk))
			flags |= CT_F_HOST_BE;
	}
	/* Without SNAT the reply tuple is taken only when another live flow
	 * comes from the same client address and port to the same backend
	 * (through another frontend): then the source port is remapped, as
	 * the kernel's NAT does on a clash, and the client address is kept. */
	if (!(flags & CT_F_SNAT) && !ct_reply_free(&p->tuple, to, now)) {
		if (adopted)
			return SVC_PASS; /* a remapped port is not the flow the endpoint has */
		flags |= CT_F_SNAT;
	}
	if ((flags & CT_F_SNAT) && snat_pick_port(&p->tuple, to, now)) {
		*why = REASON_NAT_PORTS;
		return SVC_DROP;
	}
	trace_step(TRACE_NAT, flags, 0, 0, to->saddr, bpf_ntohs(to->sport), to->daddr,
		   bpf_ntohs(to->dport), 0);

	/* Network policy on the flow as the backend will see it: the
	 * client's egress to the backend's address and port, the backend's
	 * ingress from the client. */
	r = policy_service_new(&p->tuple, to, flags, pol_gen);
	if (r != REASON_NONE) {
		*why = r;
		return SVC_DROP;
	}
	*ct_flags = flags;
	return SVC_TRANSLATE;
}

/* ctx: the TC or XDP context (for the FIB); ifindex: where it came in. */
static __always_inline enum svc_act service_new_decide(void *ctx, __u32 ifindex, struct pkt *p,
						       const struct fe_value *fe, int from_pod,
						       __u64 now, struct ct_key *to, __u8 *ct_flags,
						       __u32 *pol_gen, enum reason *why)
{
	return service_decide(ctx, ifindex, p, fe, from_pod, 0, now, to, ct_flags, pol_gen, why);
}

static __always_inline int service_new(struct __sk_buff *skb, struct pkt *p,
				       const struct fe_value *fe, int from_pod, __u64 now)
{
	struct ct_key to;
	enum reason   why     = REASON_NONE;
	__u8	      flags   = 0;
	__u32	      pol_gen = 0;
	int	      err;

	switch (service_decide(skb, skb->ingress_ifindex, p, fe, from_pod, 1, now, &to, &flags,
			       &pol_gen, &why)) {
	case SVC_TRANSLATE:
		break;
	case SVC_REJECT:
		return reject(skb, p);
	case SVC_PASS:
		count_reason(skb, why);
		return TC_ACT_OK;
	case SVC_TUNNEL: {
		struct backend be = {.addr = to.daddr, .port = to.dport};
		int	       rc = tun_ingress_new(skb, p, fe, &be, now);

		if (why == REASON_CT_NOT_OPENING && rc != TUN_NOT_TUNNELLED)
			tun_count(skb, TUN_C_MIDFLOW);

		/* The endpoint's node was known a moment ago; if the agent has
		 * just removed it, the packet goes nowhere: the client retries. */
		return rc == TUN_NOT_TUNNELLED ? drop(skb, REASON_TUN_NO_ROUTE) : rc;
	}
	default:
		return drop(skb, why);
	}

	err = ct_create(&p->tuple, &to, flags, fe->svc_id, pol_gen, now);
	if (err)
		return drop(skb, err == -E2BIG ? REASON_CT_FULL : REASON_CT_INSERT);
	if (why == REASON_CT_NOT_OPENING)
		tun_count(skb, TUN_C_MIDFLOW); /* taken mid-flow (svc_midflow_adoptable()) */
	monitor_flow_new(skb, from_pod ? MON_HOOK_POD : MON_HOOK_DATA, &p->tuple, &to, fe->svc_id,
			 flags);
	return translate(skb, p, &to);
}

/* Draining: a SYN that reopens a closed flow of ours (the client reused its
 * port) is a new flow, kube-proxy's to take: both entries go and the caller
 * passes the packet on. */
static __always_inline int drain_reopens(const struct pkt *p, const struct ct_value *ct)
{
	struct ct_key pk;

	if (!ct_has_states(p->tuple.proto) || ct->dir != CT_DIR_FWD ||
	    (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN ||
	    !(ct->state & (CT_S_RST | CT_S_FIN_FWD | CT_S_FIN_REPLY)) || !mode_draining() ||
	    cfg_trace /* lib/trace.h: no map writes */)
		return 0;
	if (ct_own_peer(&p->tuple, ct, &pk))
		bpf_map_delete_elem(&bpfproxy_ct, &pk);
	bpf_map_delete_elem(&bpfproxy_ct, &p->tuple);
	return 1;
}

/* A SYN-ACK on the reply entry of a closed translated flow (reset, or both
 * FINs seen) answers a SYN this node never translated: had the SYN come
 * through a frontend it would have hit the forward entry and started the
 * flow over (ct_update()). The client reused its source port to reach the
 * backend directly (socket LB, bpf/sock.c, or pod to pod) while the old
 * flow waits out its closing timeout, so the new connection's tuple equals
 * the old one's translated tuple; translating its SYN-ACK to the service
 * address would leave the client waiting for a SYN-ACK that never comes.
 * Both entries go (as drain_reopens() does with a reopening SYN), counted
 * as ct-stale-reply, and the caller treats the packet as of no known flow.
 * Judged on the SYN-ACK, not on the client's SYN: whichever hook the SYN
 * passed (or none: a host-network client), the SYN-ACK is the packet that
 * would be rewritten (the XDP program passes such a SYN-ACK to TC,
 * bpf/xdp_data.c). In trace mode nothing is removed, but the packet is
 * traced as the datapath would handle it. */
static __always_inline int ct_reply_is_stale(const struct pkt *p, const struct ct_value *ct)
{
	const __u8 fins = CT_S_FIN_FWD | CT_S_FIN_REPLY;

	return p->tuple.proto == IPPROTO_TCP && ct->dir == CT_DIR_REPLY &&
	       !(ct->flags & (CT_F_PLAIN | CT_F_TUNNEL)) &&
	       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) ==
		       (TCP_FLAG_SYN | TCP_FLAG_ACK) &&
	       ((ct->state & CT_S_RST) || (ct->state & fins) == fins);
}

/* Whether the entry is stale; if so both halves are removed. Not counted:
 * the caller counts REASON_CT_STALE_REPLY once it knows the packet passes
 * (one reason per packet). */
static __always_inline int ct_stale_forget(const struct pkt *p, const struct ct_value *ct)
{
	struct ct_key pk;

	if (!ct_reply_is_stale(p, ct))
		return 0;
	if (cfg_trace) /* lib/trace.h: no map writes */
		return 1;
	if (ct_own_peer(&p->tuple, ct, &pk))
		bpf_map_delete_elem(&bpfproxy_ct, &pk);
	bpf_map_delete_elem(&bpfproxy_ct, &p->tuple);
	return 1;
}

static __always_inline int ct_stale_reply(struct __sk_buff *skb, const struct pkt *p,
					  const struct ct_value *ct)
{
	if (!ct_stale_forget(p, ct))
		return 0;
	count_reason(skb, REASON_CT_STALE_REPLY);
	return 1;
}

/* UDP has no close: a TC-path flow's reply entry stays for the UDP timeout
 * after its last datagram. A pod's datagram to no frontend and of no
 * tracked flow whose replies would hit such a translated reply entry is
 * the pod reusing that flow's source port to reach its backend directly
 * (socket LB, bpf/sock.c, or pod to pod). On the wire the two flows' replies
 * cannot be told apart; the one the pod sends now wins: both entries of
 * the old flow go (as ct_stale_forget() does for TCP), so the backend's
 * replies reach the pod from the address it sent to, not from the service
 * address (a connected socket would drop those). A pod that sends to the
 * service from that port again opens a new TC-path flow. 1 when removed
 * (in trace mode: would be). */
static __always_inline int ct_udp_reuse_forget(const struct pkt *p, __u64 now)
{
	struct ct_key	 rk, pk;
	struct ct_value *ct;

	if (p->tuple.proto != IPPROTO_UDP)
		return 0;
	ct_reverse(&p->tuple, &rk);
	ct = ct_lookup(&rk, now);
	if (!ct || ct->dir != CT_DIR_REPLY || (ct->flags & (CT_F_PLAIN | CT_F_TUNNEL)))
		return 0;
	if (cfg_trace) /* lib/trace.h: no map writes */
		return 1;
	if (ct_own_peer(&rk, ct, &pk))
		bpf_map_delete_elem(&bpfproxy_ct, &pk);
	bpf_map_delete_elem(&bpfproxy_ct, &rk);
	return 1;
}

/* A frame the XDP program on this interface translated already carries
 * this in its metadata (lib/xdp.h): its flow is served. */
#define XDP_META_TRANSLATED 0x62707864 /* "bpxd" */
static __always_inline int xdp_translated(struct __sk_buff *skb)
{
	__u32 *meta = (void *)(long)skb->data_meta;

	return (void *)(meta + 1) <= (void *)(long)skb->data && *meta == XDP_META_TRANSLATED;
}

static __always_inline int service_datapath(struct __sk_buff *skb, int from_pod)
{
	struct pkt	 p = {};
	struct ct_value *ct;
	struct fe_value *fe;
	__u64		 now;
	__be32		 tpeer = 0, tlocal = 0;
	__u32		 tvni	   = 0;
	int		 tunnelled = 0;
	int stale = 0; /* a closed reply entry the packet hit was removed (ct_stale_forget) */

	enum parse_result pr;

	if (mode_standby())
		return TC_ACT_OK;
	if (!from_pod && xdp_translated(skb))
		return TC_ACT_OK;
	pr = parse_ipv4(skb, &p);
	if (pr == PARSE_NOT_IPV4)
		return TC_ACT_OK;
	if (pr == PARSE_MALFORMED)
		return drop(skb, REASON_MALFORMED);
	/* Every IPv4 packet a pod sends, whatever it carries. */
	if (from_pod && !pod_source_ok(skb->ingress_ifindex, p.tuple.saddr))
		return drop(skb, REASON_SPOOFED);
	/* From outside, one of the node's own addresses as source is forged
	 * (a martian): it would pass for our SNAT. */
	if (!from_pod) {
		struct node_ip_key nk = {.addr = p.tuple.saddr};

		if (bpf_map_lookup_elem(&bpfproxy_node_ips, &nk))
			return drop(skb, REASON_SPOOFED);
	}
	if (pr == PARSE_FRAGMENT) {
		/* Only the first fragment carries ports; the rest cannot be
		 * matched to a service. Counted and left to the stack. */
		count_reason(skb, REASON_FRAGMENT);
		return TC_ACT_OK;
	}
	if (pr == PARSE_NOT_L4 && from_pod) {
		/* No service speaks it; network policy still applies. */
		if (pol_other_ports(skb, &p))
			return drop(skb, REASON_MALFORMED);
		return policy_plain(skb, &p, 0);
	}
	if (pr != PARSE_OK)
		return TC_ACT_OK;
	/* VXLAN from another node carrying a service flow (lib/tunnel.h):
	 * from here on p is the inner packet. */
	if (!from_pod && p.tuple.proto == IPPROTO_UDP && p.tuple.dport == bpf_htons(TUN_PORT)) {
		struct node_ip_key nk = {.addr = p.tuple.daddr};

		if (bpf_map_lookup_elem(&bpfproxy_node_ips, &nk)) {
			enum tun_rx_result tr = tun_rx(skb, &p, &tpeer, &tlocal, &tvni);

			if (tr == TUN_RX_OK)
				tunnelled = 1;
			else if (tr == TUN_RX_INNER6)
				return TUN_INNER6; /* bpf/tc_data.c: lib/tunnel6.h */
			else if (tr != TUN_RX_NOT_OURS)
				return TC_ACT_SHOT; /* counted by tun_rx() */
		}
	}

	now = bpf_ktime_get_ns();
	if (p.tuple.proto == IPPROTO_ICMP) {
		int rc = service_icmp(skb, &p, now);

		if (rc != ICMP_UNRELATED)
			return rc;
		return from_pod ? policy_plain(skb, &p, 0) : TC_ACT_OK;
	}

	ct = ct_lookup(&p.tuple, now);
	if (ct && !drain_reopens(&p, ct) && !(stale = ct_stale_forget(&p, ct))) {
		struct ct_key to = {
			.saddr = ct->nat_saddr,
			.sport = ct->nat_sport,
			.daddr = ct->nat_daddr,
			.dport = ct->nat_dport,
			.proto = p.tuple.proto,
		};
		__u8	    was = ct->state;
		enum reason r	= policy_ct(&p.tuple, ct);

		trace_step(TRACE_CT_HIT, ct->dir, ct->state, ct->flags, ct->svc_id, ct->nat_saddr,
			   ct->nat_daddr, bpf_ntohs(ct->nat_sport), bpf_ntohs(ct->nat_dport));
		if (r != REASON_NONE)
			return drop(skb, r);
		ct_update(&p.tuple, ct, p.tcp_flags, now);
		monitor_flow_close(skb, from_pod ? MON_HOOK_POD : MON_HOOK_DATA, &p.tuple, ct, was,
				   now);
		if (ct->flags & CT_F_PLAIN)
			return TC_ACT_OK; /* tracked for policy: the stack forwards it */
		if (ct->flags & CT_F_TUNNEL)
			return tun_ct_forward(skb, &p, ct, &to, from_pod, tunnelled ? tpeer : 0,
					      tlocal, tvni);
		return translate_ct(skb, &p, &to, ct, now);
	}
	trace_step(TRACE_CT_MISS, 0, 0, 0, 0, 0, 0, 0, 0);
	if (tunnelled)
		return tun_backend_new(skb, &p, tpeer, tlocal, tvni, now);

	fe = lb_lookup(&p.tuple);
	if (!fe) {
		int rc;

		trace_step(TRACE_NO_FRONTEND, 0, 0, 0, 0, 0, 0, 0, 0);
		if (from_pod && ct_udp_reuse_forget(&p, now))
			stale = 1;
		rc = from_pod ? policy_plain(skb, &p, 1) : TC_ACT_OK;
		if (stale && rc == TC_ACT_OK)
			count_reason(skb, REASON_CT_STALE_REPLY);
		return rc;
	}
	trace_step(TRACE_FRONTEND, 0, 0, 0, fe->svc_id, fe->set_id, fe->cluster_count,
		   fe->local_count, fe->flags | (fe->affinity_timeout << 16));
	if (mode_draining()) {
		count_reason(skb, REASON_DRAIN_NEW);
		return TC_ACT_OK;
	}
	return service_new(skb, &p, fe, from_pod, now);
}

/* TC egress: a reply the node sends as a host-network backend gets the
 * reverse translation its flow's entry holds (service address and port as
 * the client addressed them). Only packets from one of the node's own
 * addresses are looked at; the interface they leave by is the stack's
 * choice, so the packet is rewritten in place and passed on. */
static __always_inline int service_host_reply_pkt(struct __sk_buff *skb, struct pkt *p)
{
	struct node_ip_key nk;
	struct ct_value	  *ct;
	__u64		   now;

	if (mode_standby() || p->tuple.proto == IPPROTO_ICMP)
		return TC_ACT_OK;
	nk.addr = p->tuple.saddr;
	if (!bpf_map_lookup_elem(&bpfproxy_node_ips, &nk))
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	ct  = ct_lookup(&p->tuple, now);
	if (!ct || ct->dir != CT_DIR_REPLY || !(ct->flags & CT_F_HOST_BE))
		return TC_ACT_OK;
	if (ct_stale_reply(skb, p, ct))
		return TC_ACT_OK; /* a new connection of the client's, not this flow's */
	{
		__u8 was = ct->state;

		ct_update(&p->tuple, ct, p->tcp_flags, now);
		monitor_flow_close(skb, MON_HOOK_HOST, &p->tuple, ct, was, now);
	}
	if (ct->flags & CT_F_TUNNEL) {
		/* a tunnelled flow's reply in Tunnel mode goes back to the
		 * ingress node (lib/tunnel_svc.h) */
		struct ct_tun *tvp = tun_ct_lookup(&p->tuple);

		if (tvp && tvp->role == TUN_R_BACKEND && tvp->mode == EXT_M_TUNNEL) {
			struct ct_tun tv = *tvp;
			struct ct_key to = {
				.saddr = ct->nat_saddr,
				.sport = ct->nat_sport,
				.daddr = ct->nat_daddr,
				.dport = ct->nat_dport,
				.proto = p->tuple.proto,
			};

			return tun_reply_encap(skb, p, &tv, &to);
		}
	}
	if (nat_rewrite(skb, p, ct->nat_saddr, ct->nat_sport, ct->nat_daddr, ct->nat_dport))
		return drop(skb, REASON_REWRITE_FAILED);
	return TC_ACT_OK;
}

static __always_inline int service_host_reply(struct __sk_buff *skb)
{
	struct pkt p = {};

	if (parse_ipv4(skb, &p) != PARSE_OK)
		return TC_ACT_OK;
	return service_host_reply_pkt(skb, &p);
}

/* TC egress of a pod veth: network policy for what enters the pod (lib/
 * policy.h policy_to_pod()), then the host-reply translation above. */
static __always_inline int service_to_pod(struct __sk_buff *skb)
{
	struct pkt	  p  = {};
	enum parse_result pr = parse_ipv4(skb, &p);
	int		  rc;

	if (pr != PARSE_OK && pr != PARSE_NOT_L4)
		return TC_ACT_OK; /* not IPv4, a later fragment, or cut short: the stack decides */
	rc = policy_to_pod(skb, &p, pr);
	if (rc != TC_ACT_OK || pr != PARSE_OK)
		return rc;
	return service_host_reply_pkt(skb, &p);
}

#endif /* BPFPROXY_SERVICE_H */
