/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NetworkPolicy and IPv6. Policy is enforced for IPv4 only (lib/policy.h:
 * the ipcache and the rule tables hold IPv4 addresses); IPv6 fails closed.
 * A pod isolated in a direction (its IPv4 address's ipcache entry says so;
 * the pod is found by its interface, bpfproxy_pod_addrs) gets no IPv6 in
 * that direction except neighbour discovery (router and neighbour
 * solicitations and advertisements, redirects), which its IPv6 stack needs.
 * Everything else is dropped as policy-ipv6: no flow is tracked for IPv6
 * policy, so replies of the pod's own connections are dropped as well.
 *
 * Where: the pod veth's ingress (tc_pod.c, the pod's egress), its egress
 * (tc_to_pod.c, the pod's ingress), and IPv6 service traffic handed to a
 * pod with bpf_redirect_peer (lib/service6.h fib6_forward(), which skips
 * the veth's egress hook). With nothing isolated (or --network-policy=off,
 * which never isolates anything) each costs one array lookup.
 */
#ifndef BPFPROXY_POLICY6_H
#define BPFPROXY_POLICY6_H

#include "common.h"
#include "drop.h"
#include "mode.h"
#include "parse6.h"
#include "pod.h"
#include "policy.h"

/* 1 when the pod behind ifindex is isolated in the direction iso
 * (IPC_F_INGRESS_ISO or IPC_F_EGRESS_ISO). */
static __noinline int pol6_pod_isolated(__u32 ifindex, __u32 iso)
{
	struct pod_if_key k = {.ifindex = ifindex};
	struct pod_addr	 *a;
	struct pol_end	  e;

	if (!pol_active_gen())
		return 0;
	a = bpf_map_lookup_elem(&bpfproxy_pod_addrs, &k);
	if (!a)
		return 0;
	pol_resolve(a->addr4, &e);
	return (e.flags & iso) != 0;
}

/* ICMPv6 types of neighbour discovery (RFC 4861): 133 router
 * solicitation, 134 router advertisement, 135 neighbour solicitation, 136
 * neighbour advertisement, 137 redirect. */
static __always_inline int icmp6_is_nd(__u8 type)
{
	return type >= 133 && type <= 137;
}

/* An IPv6 packet on the veth of the pod behind ifindex: TC_ACT_OK, or
 * dropped when the pod is isolated in direction iso and the packet is not
 * neighbour discovery. */
static __noinline int policy6_pod(struct __sk_buff *skb, __u32 ifindex, __u32 iso)
{
	struct pkt6 p = {};

	/* In standby (taking over) the pod veth's ingress enforces nothing,
	 * IPv4 included (service_datapath()); its egress does. */
	if (iso == IPC_F_EGRESS_ISO && mode_standby())
		return TC_ACT_OK;
	if (!pol6_pod_isolated(ifindex, iso))
		return TC_ACT_OK;
	if (parse_ipv6(skb, &p) == PARSE_OK && p.tuple.proto == IPPROTO_ICMPV6_ &&
	    icmp6_is_nd(p.icmp_type))
		return TC_ACT_OK;
	return drop(skb, REASON_POLICY_IPV6);
}

#endif /* BPFPROXY_POLICY6_H */
