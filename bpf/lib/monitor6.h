/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The IPv6 path's monitor events and trace steps (lib/service6.h): the
 * same events at the same points as IPv4's (lib/monitor.h), with the
 * addresses in the event's *6 fields (family 6), and the trace steps with
 * their addresses in TRACE_ADDR6 steps that follow them (lib/types.h).
 *
 * The IPv6 programs are near the 512-byte stack limit: what is built here
 * is built in the scratch event (a map value) or the trace map, out of
 * line (__noinline, no locals of size), behind the one inline check
 * (monitor_on(), cfg_trace) at the call site.
 */
#ifndef BPFPROXY_MONITOR6_H
#define BPFPROXY_MONITOR6_H

#include "common.h"
#include "monitor.h"
#include "trace.h"
#include "conntrack6.h"
#include "types6.h"

static __always_inline void monitor6_addr(__be32 *d, const union v6addr *a)
{
	d[0] = a->w[0];
	d[1] = a->w[1];
	d[2] = a->w[2];
	d[3] = a->w[3];
}

static __always_inline void monitor6_ports(struct ct_key *d, const struct ct6_key *s)
{
	d->sport = s->sport;
	d->dport = s->dport;
	d->proto = s->proto;
}

/* The service and ct flags are those of the forward entry just created
 * (read back here, out of the callers' frames: the stack limit). */
static __noinline int monitor_flow_new6_out(struct __sk_buff *skb, const struct ct6_key *tuple,
					    const struct ct6_key *to, __u32 hook)
{
	struct monitor_event *e = monitor_scratch();
	struct ct6_value     *ct;

	if (!e)
		return 0;
	ct = bpf_map_lookup_elem(&bpfproxy_ct6, tuple);
	if (!ct)
		return 0;
	monitor_fill(e, MON_FLOW_NEW, hook, 0, ct->flags);
	e->family = 6;
	monitor6_ports(&e->tuple, tuple);
	monitor6_ports(&e->nat, to);
	monitor6_addr(e->saddr6, &tuple->saddr);
	monitor6_addr(e->daddr6, &tuple->daddr);
	monitor6_addr(e->nat_saddr6, &to->saddr);
	monitor6_addr(e->nat_daddr6, &to->daddr);
	e->svc_id = ct->svc_id;
	return monitor_send(skb, 0);
}

/* A new IPv6 service flow (as monitor_flow_new()), once service6_new()
 * created its entries. */
static __always_inline void monitor_flow_new6(struct __sk_buff *skb, __u8 hook,
					      const struct ct6_key *tuple, const struct ct6_key *to)
{
	if (monitor_on())
		monitor_flow_new6_out(skb, tuple, to, hook);
}

static __noinline int monitor_flow_close6_out(struct __sk_buff *skb, const struct ct6_key *key,
					      const struct ct6_value *ct, __u32 hook_code,
					      __u64 now)
{
	struct monitor_event *e = monitor_scratch();

	if (!e)
		return 0;
	monitor_fill(e, MON_FLOW_CLOSE, hook_code & 0xff, hook_code >> 8, ct->flags);
	e->family = 6;
	monitor6_ports(&e->tuple, key);
	monitor6_ports(&e->nat, key);
	if (ct->dir == CT_DIR_FWD) {
		monitor6_addr(e->saddr6, &key->saddr);
		monitor6_addr(e->daddr6, &key->daddr);
		monitor6_addr(e->nat_saddr6, &ct->nat_saddr);
		monitor6_addr(e->nat_daddr6, &ct->nat_daddr);
		e->nat.sport = ct->nat_sport;
		e->nat.dport = ct->nat_dport;
	} else {
		/* the reply entry: as monitor_flow_close() */
		monitor6_addr(e->saddr6, &ct->nat_daddr);
		monitor6_addr(e->daddr6, &ct->nat_saddr);
		e->tuple.sport = ct->nat_dport;
		e->tuple.dport = ct->nat_sport;
		monitor6_addr(e->nat_saddr6, &key->daddr);
		monitor6_addr(e->nat_daddr6, &key->saddr);
		e->nat.sport = key->dport;
		e->nat.dport = key->sport;
	}
	e->svc_id      = ct->svc_id;
	e->duration_ns = now - ct->created_ns;
	return monitor_send(skb, 0);
}

/* After ct6_update(): as monitor_flow_close(), IPv6. */
static __always_inline void monitor_flow_close6(struct __sk_buff *skb, __u8 hook,
						const struct ct6_key   *key,
						const struct ct6_value *ct, __u8 was, __u64 now)
{
	const __u8 fins = CT_S_FIN_FWD | CT_S_FIN_REPLY;
	__u8	   st	= ct->state, code;

	if ((st & CT_S_RST) && !(was & CT_S_RST))
		code = MON_CLOSE_RST;
	else if ((st & fins) == fins && (was & fins) != fins)
		code = MON_CLOSE_FIN;
	else
		return;
	if (monitor_on())
		monitor_flow_close6_out(skb, key, ct, hook | ((__u32)code << 8), now);
}

/* ---- trace steps (lib/trace.h), IPv6 --------------------------------------- */

static __always_inline void trace6_addr(const union v6addr *a, __be16 port)
{
	trace_step(TRACE_ADDR6, 0, 0, 0, a->w[0], a->w[1], a->w[2], a->w[3], bpf_ntohs(port));
}

static __noinline int trace6_ct_hit_out(const struct ct6_value *ct)
{
	trace_step(TRACE_CT_HIT, ct->dir, ct->state, ct->flags, ct->svc_id, 0, 0,
		   bpf_ntohs(ct->nat_sport), bpf_ntohs(ct->nat_dport));
	trace6_addr(&ct->nat_saddr, ct->nat_sport);
	trace6_addr(&ct->nat_daddr, ct->nat_dport);
	return 0;
}

/* No backend: reason r (lib/drop.h). */
static __noinline int trace6_backend_out(__u32 r, __u32 local_only)
{
	trace_step(TRACE_BACKEND, r, local_only, 0, 0, 0, 0, 0, 0);
	return 0;
}

/* A new flow: the backend chosen (to's destination), then the translation.
 * One call, with what service6_new() has in registers: a second, or the
 * backend's address, would grow its frame (the stack limit). */
static __noinline int trace6_new_out(__u32 be_flags, __u32 local_only, __u32 flags,
				     const struct ct6_key *to)
{
	trace_step(TRACE_BACKEND, 0, local_only, be_flags, 0, bpf_ntohs(to->dport), 0, 0, 0);
	trace6_addr(&to->daddr, to->dport);
	trace_step(TRACE_NAT, flags, 0, 0, 0, bpf_ntohs(to->sport), 0, bpf_ntohs(to->dport), 0);
	trace6_addr(&to->saddr, to->sport);
	trace6_addr(&to->daddr, to->dport);
	return 0;
}

static __noinline int trace6_frontend_out(const struct fe_value *fe)
{
	trace_step(TRACE_FRONTEND, 6, 0, 0, fe->svc_id, fe->set_id, fe->cluster_count,
		   fe->local_count, fe->flags | (fe->affinity_timeout << 16));
	return 0;
}

/* The calls the IPv6 path makes: one check of cfg_trace inline (the
 * agent's copy prunes them), the step out of line. */
#define trace6_ct_hit(ct)                                                                          \
	do {                                                                                       \
		if (cfg_trace)                                                                     \
			trace6_ct_hit_out(ct);                                                     \
	} while (0)
#define trace6_backend(r, local_only)                                                              \
	do {                                                                                       \
		if (cfg_trace)                                                                     \
			trace6_backend_out(r, local_only);                                         \
	} while (0)
#define trace6_new(be_flags, local_only, flags, to)                                                \
	do {                                                                                       \
		if (cfg_trace)                                                                     \
			trace6_new_out(be_flags, local_only, flags, to);                           \
	} while (0)
#define trace6_frontend(fe)                                                                        \
	do {                                                                                       \
		if (cfg_trace)                                                                     \
			trace6_frontend_out(fe);                                                   \
	} while (0)

#endif /* BPFPROXY_MONITOR6_H */
