/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Why a packet was not simply passed on. Every drop goes through drop(),
 * which counts it per reason in one per-CPU map; nothing else in the
 * programs returns TC_ACT_SHOT. Packets passed on with a remark (fragments,
 * TTL, non-opening packets of unknown flows) and packets answered instead
 * of forwarded (rejects, fragmentation needed) are counted with
 * count_reason(). The names live in src/dataplane/bpf/reasons.ts, in the
 * same order; new reasons are appended so pinned counters keep their
 * meaning across upgrades. Both also tell a listening monitor (lib/
 * monitor.h) and, in trace mode, the trace instead of the counters (lib/
 * trace.h).
 */
#ifndef BPFPROXY_DROP_H
#define BPFPROXY_DROP_H

#include "common.h"
#include "monitor.h"
#include "trace.h"

enum reason {
	REASON_NONE = 0,
	REASON_MALFORMED,	   /* truncated or inconsistent headers: dropped */
	REASON_NO_ENDPOINTS,	   /* service without endpoints: rejected */
	REASON_NO_LOCAL_ENDPOINTS, /* traffic policy Local, none on this node: dropped */
	REASON_CT_INSERT,	   /* conntrack update failed: dropped */
	REASON_NAT_PORTS,	   /* no free SNAT port: dropped */
	REASON_BACKEND_MISSING,	   /* slot vanished under an update: dropped */
	REASON_REJECT_FAILED,	   /* could not build the reject: dropped */
	REASON_REWRITE_FAILED,	   /* a packet rewrite helper failed: dropped */
	REASON_FRAGMENT,	   /* non-first fragment: passed to the stack */
	REASON_TTL,		   /* TTL expired while forwarding: passed to the stack */
	REASON_FRAG_NEEDED,	   /* too big for the next hop with DF: ICMP sent back */
	REASON_NO_SNAT_SOURCE, /* no SNAT source towards the backend (lib/fib.h fib_source_for()): dropped */
	REASON_CT_FULL,	       /* conntrack map full, new flow refused: dropped */
	REASON_CT_NOT_OPENING, /* TCP without SYN to a service, no flow known: passed to the stack */
	REASON_SPOOFED,	       /* from a pod interface with a source not routed to it: dropped */
	REASON_POLICY_DENIED, /* network policy: no rule allows the flow, or one denies it: dropped */
	REASON_POLICY_NO_TABLE, /* network policy: isolated endpoint without a rule table: dropped */
	REASON_POLICY_UNKNOWN_FLOW, /* network policy: TCP without SYN of no flow known, to or from
				     * an isolated endpoint: dropped */
	REASON_DRAIN_NEW, /* draining (rollback): a new flow to a service, passed to the stack */
	REASON_LB_SOURCE_RANGE, /* to a LoadBalancer IP from outside its loadBalancerSourceRanges: dropped */
	REASON_TUN_FORGED,    /* VXLAN with our VNI from an address that is no node's: dropped */
	REASON_TUN_MALFORMED, /* our VXLAN, headers cut short or inconsistent: dropped */
	REASON_TUN_NO_ROUTE,  /* no route to the tunnel peer node: dropped */
	REASON_TUN_NO_FLOW,   /* tunnelled packet of no known flow that cannot open one: dropped */
	/* a SYN-ACK on the reply entry of a closed translated flow, or a
	 * pod's UDP datagram whose replies would hit a translated flow's reply
	 * entry: the client reused its port to reach the backend directly;
	 * entries removed, passed untranslated */
	REASON_CT_STALE_REPLY,
	/* IPv6 other than neighbour discovery, to or from a pod isolated in
	 * that direction (by its IPv4 address), at an IPv6 address
	 * bpfproxy_ipcache6 does not know: dropped (lib/policy6.h) */
	REASON_POLICY_IPV6,
	__REASON_MAX,
};

/* Every enum whose values the agent copies (reasons, flags, states), in one
 * read-only global so that they reach the object's BTF: the agent's tests
 * check the TypeScript copies against it, so a reorder here fails them. */
const volatile struct {
	enum reason	   reason;
	enum fe_flags	   fe_flags;
	enum backend_flags backend_flags;
	enum ct_dir	   ct_dir;
	enum ct_state_bits ct_state_bits;
	enum ct_flags	   ct_flags;
	enum maglev_table  maglev_table;
	enum ipcache_flags ipcache_flags;
	enum pol_identity  pol_identity;
	enum pol_dir	   pol_dir;
	enum pol_verdict   pol_verdict;
	enum mode_flags	   mode_flags;
	enum node_ip_flags node_ip_flags;
	enum ext_mode	   ext_mode;
	enum tun_role	   tun_role;
	enum tun_counter   tun_counter;
} bpfproxy_enums_btf;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, __REASON_MAX);
	__type(key, __u32);
	__type(value, struct reason_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_reasons SEC(".maps");

static __always_inline void reason_note(struct __sk_buff *skb, enum reason r, __u8 dropped)
{
	__u32		       k = r;
	struct reason_counter *c;

	if (cfg_trace) {
		trace_step(TRACE_REASON, r, dropped, 0, 0, 0, 0, 0, 0);
		return;
	}
	c = bpf_map_lookup_elem(&bpfproxy_reasons, &k);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	monitor_reason(skb, r, dropped);
}

static __always_inline void count_reason(struct __sk_buff *skb, enum reason r)
{
	reason_note(skb, r, 0);
}

/* Count and drop. */
static __always_inline int drop(struct __sk_buff *skb, enum reason r)
{
	reason_note(skb, r, 1);
	return TC_ACT_SHOT;
}

#endif /* BPFPROXY_DROP_H */
