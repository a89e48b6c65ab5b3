/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Events for `bpfproxy monitor`: flows created and closed, packets counted
 * under a reason (drops, rejects, ...), policy verdicts. Each listening
 * monitor has a ring buffer of its own in a slot of bpfproxy_monitor_rings
 * (one BPF ring buffer has one consumer position: two readers of one ring
 * would each see part of the events), claimed and leased through
 * bpfproxy_monitor_ctl (src/dataplane/bpf/monitor.ts).
 *
 * Costless when nobody listens: the places that could emit an event (a new
 * flow, a close, a reason, a verdict; never a plain forwarded packet) make
 * one check, monitor_on(): an array lookup the verifier inlines and one
 * load, ctl->until_ns == 0. Bounded when listening: a full ring refuses the
 * event (bpf_ringbuf_output never waits) and the event is counted lost in
 * bpfproxy_monitor_lost, per CPU and slot.
 *
 * Flow close is what this datapath sees: a RST, or FINs both ways. Flows
 * that end by going quiet (UDP, idle TCP) are removed by the agent's
 * conntrack GC, in user space, which cannot write to a ring: no event.
 */
#ifndef BPFPROXY_MONITOR_H
#define BPFPROXY_MONITOR_H

#include "common.h"
#include "trace.h"

#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif

/* The enums the agent copies (src/dataplane/bpf/codecs.ts), in the object's
 * BTF for the tests to compare (as bpfproxy_enums_btf in lib/drop.h). */
const volatile struct {
	enum monitor_type      monitor_type;
	enum monitor_hook      monitor_hook;
	enum monitor_close     monitor_close;
	enum monitor_verdict   monitor_verdict;
	enum monitor_direction monitor_direction;
	enum trace_kind	       trace_kind;
} bpfproxy_monitor_enums_btf;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct monitor_ctl);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_monitor_ctl SEC(".maps");

struct monitor_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MONITOR_RING_BYTES);
};

/* Slot i: the ring buffer of the monitor that holds slot i of the ctl. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MONITOR_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct monitor_ring); /* last: a flexible array */
} bpfproxy_monitor_rings SEC(".maps");

/* Events a full ring refused, per CPU, by slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MONITOR_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_monitor_lost SEC(".maps");

/* The event being built (too big for the stack of the deeper callers). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct monitor_event);
} bpfproxy_monitor_scratch SEC(".maps");

/* Whether any monitor may listen: the one check, inline where an event
 * could start. Whether its lease still runs (a monitor killed without
 * letting go) is checked out of line, by monitor_send(). */
static __always_inline int monitor_on(void)
{
	__u32		    k = 0;
	struct monitor_ctl *c;

	if (cfg_trace)
		return 0;
	c = bpf_map_lookup_elem(&bpfproxy_monitor_ctl, &k);
	return c && *(volatile __u64 *)&c->until_ns != 0;
}

static __always_inline struct monitor_event *monitor_scratch(void)
{
	__u32 k = 0;

	return bpf_map_lookup_elem(&bpfproxy_monitor_scratch, &k);
}

/* monitor_read_tuple() loads saddr6 and daddr6 with one call, and the IPv4
 * header into data[] before the snapshot. */
_Static_assert(sizeof(((struct monitor_event *)0)->data) >= sizeof(struct iphdr),
	       "struct monitor_event: data[] holds an IPv4 header");
_Static_assert(__builtin_offsetof(struct monitor_event, daddr6) ==
		       __builtin_offsetof(struct monitor_event, saddr6) + 16,
	       "struct monitor_event: daddr6 right after saddr6");

/* The tuple of the frame, read again (a drop can come before or without a
 * parse), with its family; fields it cannot read stay zero. IPv6: the
 * addresses straight into the event's *6 fields, the ports when a TCP, UDP
 * or SCTP header follows the fixed header (no extension header: behind them
 * the agent reads the ports from the captured frame, src/dataplane/bpf/
 * monitor.ts extTuple6(); a walk here costs every reason's call site in the
 * verifier, past its limit for bpfproxy_data). */
static __always_inline void monitor_read_tuple(struct __sk_buff *skb, struct monitor_event *e)
{
	struct ct_key *t = &e->tuple;
	/* the IPv4 header is read into data[], which the snapshot overwrites
	 * after: not on the stack, whose every byte the deepest call chains
	 * (service6_new() -> a reason -> here) need */
	struct iphdr *ip = (struct iphdr *)e->data;
	__be16	      proto, ports[2];
	__u8	      nexthdr;
	__u32	      l4;

	__builtin_memset(t, 0, sizeof(*t));
	e->family = 0;
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return;
	if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, IP_OFF + 6, &nexthdr, sizeof(nexthdr)) ||
		    bpf_skb_load_bytes(skb, IP_OFF + 8, e->saddr6,
				       sizeof(e->saddr6) + sizeof(e->daddr6)))
			return;
		e->family = 6;
		t->proto  = nexthdr;
		if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP && nexthdr != IPPROTO_SCTP)
			return;
		l4 = IP_OFF + 40;
	} else {
		if (proto != bpf_htons(ETH_P_IP) ||
		    bpf_skb_load_bytes(skb, IP_OFF, ip, sizeof(*ip)) || ip->version != 4)
			return;
		e->family = 4;
		t->saddr  = ip->saddr;
		t->daddr  = ip->daddr;
		t->proto  = ip->protocol;
		if ((ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP &&
		     ip->protocol != IPPROTO_SCTP) ||
		    (ip->frag_off & bpf_htons(IP_OFFSET)) || ip->ihl < 5)
			return;
		l4 = IP_OFF + ip->ihl * 4;
	}
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return;
	t->sport = ports[0];
	t->dport = ports[1];
}

/* Finish the scratch event (time, interface, length, the frame's first
 * bytes) and hand it to every monitor whose lease runs. Out of line: it
 * is called from every reason's call site. */
static __noinline int monitor_send(struct __sk_buff *skb, int read_tuple)
{
	struct monitor_event *e = monitor_scratch();
	struct monitor_ctl   *c;
	__u32		      k	  = 0, i, cap, ifindex, ingress;
	__u64		      now = bpf_ktime_get_ns();

	c = bpf_map_lookup_elem(&bpfproxy_monitor_ctl, &k);
	if (!e || !c || *(volatile __u64 *)&c->until_ns <= now)
		return 0;
	/* both read as they are: a ctx field must be read at a constant offset */
	ifindex = skb->ifindex;
	ingress = skb->ingress_ifindex;
	asm volatile(""
		     :
		     : "r"(ifindex), "r"(ingress)); /* read here, not as a select of pointers */
	e->ts_ns   = now;
	e->ifindex = e->hook == MON_HOOK_HOST ? ifindex : ingress;
	e->pkt_len = skb->len;
	e->pad[0] = e->pad[1] = e->pad[2] = e->pad[3] = e->pad[4] = 0;
	if (read_tuple)
		monitor_read_tuple(skb, e);
	__builtin_memset(e->data, 0, sizeof(e->data));
	cap = skb->len;
	if (cap > MONITOR_SNAP_LEN)
		cap = MONITOR_SNAP_LEN;
	if (cap < 1 || bpf_skb_load_bytes(skb, 0, e->data, cap))
		cap = 0;
	e->cap_len = cap;

#pragma clang loop unroll(full)
	for (i = 0; i < MONITOR_SLOTS; i++) {
		__u32  slot = i;
		void  *ring;
		__u64 *lost;

		if (*(volatile __u64 *)&c->slot[i].until_ns <= now)
			continue;
		ring = bpf_map_lookup_elem(&bpfproxy_monitor_rings, &slot);
		if (!ring)
			continue;
		if (bpf_ringbuf_output(ring, e, sizeof(*e), 0) == 0)
			continue;
		lost = bpf_map_lookup_elem(&bpfproxy_monitor_lost, &slot);
		if (lost)
			(*lost)++;
	}
	return 0;
}

static __always_inline void monitor_tuple_zero(struct ct_key *t)
{
	t->saddr  = 0;
	t->daddr  = 0;
	t->sport  = 0;
	t->dport  = 0;
	t->proto  = 0;
	t->pad[0] = t->pad[1] = t->pad[2] = 0;
}

static __always_inline void monitor_tuple_copy(struct ct_key *d, const struct ct_key *s)
{
	d->saddr  = s->saddr;
	d->daddr  = s->daddr;
	d->sport  = s->sport;
	d->dport  = s->dport;
	d->proto  = s->proto;
	d->pad[0] = d->pad[1] = d->pad[2] = 0;
}

/* Every field but the packet's (monitor_send's), one by one, and tuples
 * copied field by field, never as a struct: clang 14's BPF backend drops
 * the stores made before a struct copy from a constant (a caller's
 * initializer) when a call follows. */
static __always_inline void monitor_fill(struct monitor_event *e, __u8 type, __u8 hook, __u8 code,
					 __u8 flags)
{
	e->type	       = type;
	e->hook	       = hook;
	e->code	       = code;
	e->flags       = flags;
	e->svc_id      = 0;
	e->rule_id     = 0;
	e->endpoint    = 0;
	e->duration_ns = 0;
	e->family      = 4; /* the IPv6 callers (lib/monitor6.h) set 6 */
	monitor_tuple_zero(&e->tuple);
	monitor_tuple_zero(&e->nat);
	__builtin_memset(e->saddr6, 0, sizeof(e->saddr6));
	__builtin_memset(e->daddr6, 0, sizeof(e->daddr6));
	__builtin_memset(e->nat_saddr6, 0, sizeof(e->nat_saddr6));
	__builtin_memset(e->nat_daddr6, 0, sizeof(e->nat_daddr6));
}

/* A new service flow: tuple as the client sent it, 'to' after translation. */
static __always_inline void monitor_flow_new(struct __sk_buff *skb, __u8 hook,
					     const struct ct_key *tuple, const struct ct_key *to,
					     __u32 svc_id, __u8 ct_flags)
{
	struct monitor_event *e;

	if (!monitor_on())
		return;
	e = monitor_scratch();
	if (!e)
		return;
	monitor_fill(e, MON_FLOW_NEW, hook, 0, ct_flags);
	monitor_tuple_copy(&e->tuple, tuple);
	monitor_tuple_copy(&e->nat, to);
	e->svc_id = svc_id;
	monitor_send(skb, 0);
}

/* After ct_update(): a flow whose entry just took a RST, or its second
 * FIN, is reported closed (from the client's side, whichever direction
 * the packet went). 'was' is the entry's state before the update. Costs a
 * compare of two bytes when nothing closed. */
static __always_inline void monitor_flow_close(struct __sk_buff *skb, __u8 hook,
					       const struct ct_key *key, const struct ct_value *ct,
					       __u8 was, __u64 now)
{
	const __u8	      fins = CT_S_FIN_FWD | CT_S_FIN_REPLY;
	struct monitor_event *e;
	__u8		      st = ct->state, code;

	if ((st & CT_S_RST) && !(was & CT_S_RST))
		code = MON_CLOSE_RST;
	else if ((st & fins) == fins && (was & fins) != fins)
		code = MON_CLOSE_FIN;
	else
		return;
	if (!monitor_on())
		return;
	e = monitor_scratch();
	if (!e)
		return;
	monitor_fill(e, MON_FLOW_CLOSE, hook, code, ct->flags);
	if (ct->dir == CT_DIR_FWD) {
		monitor_tuple_copy(&e->tuple, key);
		e->nat.saddr = ct->nat_saddr;
		e->nat.daddr = ct->nat_daddr;
		e->nat.sport = ct->nat_sport;
		e->nat.dport = ct->nat_dport;
		e->nat.proto = key->proto;
	} else {
		/* the reply entry: key is the reverse of the translated tuple,
		 * its rewrite leads back to the client's own */
		e->tuple.saddr = ct->nat_daddr;
		e->tuple.daddr = ct->nat_saddr;
		e->tuple.sport = ct->nat_dport;
		e->tuple.dport = ct->nat_sport;
		e->tuple.proto = key->proto;
		e->nat.saddr   = key->daddr;
		e->nat.daddr   = key->saddr;
		e->nat.sport   = key->dport;
		e->nat.dport   = key->sport;
		e->nat.proto   = key->proto;
	}
	e->svc_id      = ct->svc_id;
	e->duration_ns = now - ct->created_ns;
	monitor_send(skb, 0);
}

static __noinline int monitor_reason_out(struct __sk_buff *skb, __u32 r, __u32 dropped)
{
	struct monitor_event *e = monitor_scratch();

	if (!e)
		return 0;
	monitor_fill(e, MON_DROP, 0, r, dropped);
	return monitor_send(skb, 1);
}

/* A packet counted under reason r (lib/drop.h); dropped: TC_ACT_SHOT.
 * Inline at every reason's call site: the check, then a call. */
static __always_inline void monitor_reason(struct __sk_buff *skb, __u32 r, __u8 dropped)
{
	if (monitor_on())
		monitor_reason_out(skb, r, dropped);
}

/*
 * A policy verdict (for the policy datapath): verdict enum
 * monitor_verdict, the rule that decided (0: none, the default), the local
 * endpoint, direction enum monitor_direction, the packet's tuple. Recorded
 * as a step in trace mode, sent to listening monitors otherwise.
 */
static __always_inline void monitor_policy(struct __sk_buff *skb, __u8 hook,
					   const struct ct_key *tuple, __u8 verdict, __u32 rule_id,
					   __u32 endpoint, __u8 direction)
{
	struct monitor_event *e;

	trace_step(TRACE_POLICY, verdict, direction, 0, rule_id, endpoint, 0, 0, 0);
	if (!monitor_on())
		return;
	e = monitor_scratch();
	if (!e)
		return;
	monitor_fill(e, MON_POLICY, hook, verdict, direction);
	monitor_tuple_copy(&e->tuple, tuple);
	e->rule_id  = rule_id;
	e->endpoint = endpoint;
	monitor_send(skb, 0);
}

#endif /* BPFPROXY_MONITOR_H */
