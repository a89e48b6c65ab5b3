/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the programs do now, as opposed to how they were loaded (lib/
 * config.h): one array entry the agent writes while they run, read per
 * packet where it matters.
 *
 * MODE_F_STANDBY (taking over from kube-proxy): the programs are attached,
 * one interface after another, but pass every packet untouched, so no flow
 * has one direction through our NAT and the other through the kernel's
 * (whose TCP window tracking would then find it invalid). The agent adopts
 * the kernel's flows and clears the flag: every interface switches at once.
 *
 * MODE_F_DRAIN (bpfEnabled=false, rollback to kube-proxy): packets of flows
 * in our conntrack are served exactly as before; a packet that would open a
 * new service flow is passed to the stack untouched (kube-proxy's rules take
 * it) and creates nothing. The agent detaches once no open flow is left or
 * its drain time is up (src/dataplane/bpf/drain.ts).
 */
#ifndef BPFPROXY_MODE_H
#define BPFPROXY_MODE_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mode_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_mode SEC(".maps");

static __always_inline __u32 mode_flags(void)
{
	__u32		   k = 0;
	struct mode_value *m = bpf_map_lookup_elem(&bpfproxy_mode, &k);

	return m ? m->flags : 0;
}

static __always_inline int mode_draining(void)
{
	return mode_flags() & MODE_F_DRAIN;
}

static __always_inline int mode_standby(void)
{
	return mode_flags() & MODE_F_STANDBY;
}

#endif /* BPFPROXY_MODE_H */
