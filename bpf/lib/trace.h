/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Trace mode: `bpfproxy trace` loads a second copy of the object with
 * cfg_trace = 1, over the running agent's pinned maps, and runs one
 * synthetic packet through it with BPF_PROG_RUN. In that copy:
 *  - every write to a shared map is skipped: conntrack creation, update and
 *    refresh (lib/conntrack.h), ClientIP affinity (lib/lb.h), the reason
 *    counters (lib/drop.h), monitor events (lib/monitor.h). A map write
 *    added to the datapath must be skipped the same way (if (!cfg_trace));
 *    test/trace.test.ts compares every pinned map byte for byte around a
 *    trace;
 *  - each decision is appended to bpfproxy_trace, a map of its own (not
 *    pinned: each loaded copy has its own), which the CLI reads back.
 * In the agent's copy cfg_trace is 0: the verifier prunes every branch
 * below, so tracing costs the datapath nothing.
 */
#ifndef BPFPROXY_TRACE_H
#define BPFPROXY_TRACE_H

#include "common.h"

const volatile __u8 cfg_trace = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trace_buf);
} bpfproxy_trace SEC(".maps");

static __always_inline void trace_step(__u8 kind, __u8 b0, __u8 b1, __u8 b2, __u32 w0, __u32 w1,
				       __u32 w2, __u32 w3, __u32 w4)
{
	__u32		   k = 0;
	struct trace_buf  *t;
	struct trace_step *s;
	__u32		   n;

	if (!cfg_trace)
		return;
	t = bpf_map_lookup_elem(&bpfproxy_trace, &k);
	if (!t)
		return;
	n = t->count;
	if (n >= TRACE_MAX_STEPS)
		return;
	s	 = &t->step[n];
	s->kind	 = kind;
	s->b[0]	 = b0;
	s->b[1]	 = b1;
	s->b[2]	 = b2;
	s->w[0]	 = w0;
	s->w[1]	 = w1;
	s->w[2]	 = w2;
	s->w[3]	 = w3;
	s->w[4]	 = w4;
	t->count = n + 1;
}

#endif /* BPFPROXY_TRACE_H */
