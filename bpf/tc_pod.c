// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC ingress on pod-facing interfaces (host side of the pod's veth): traffic
 * from pods to services, and replies from backend pods.
 *
 * Compiled as part of bpf/bpfproxy.c (one object, shared maps). */
#include "lib/policy6.h"
#include "lib/service.h"
#include "lib/service6.h"

/* Each family in a function of its own: the verifier counts a call
 * chain's stack frames together, and both paths need room. */
static __noinline int bpfproxy_pod4(struct __sk_buff *skb)
{
	return service_datapath(skb, 1);
}

/* IPv6: a pod without IPv6 policy state fails closed first (lib/policy6.h
 * policy6_pod()), then services, which apply network policy as they go.
 * policy6_pod() returns before service6_datapath() is called: their
 * frames are never on the stack together (nor is anything else added to
 * this frame: the service chain below is within bytes of the limit).
 * Inline into bpfproxy_pod: it has no frame, and a call per packet costs. */
static __always_inline int bpfproxy_pod6(struct __sk_buff *skb)
{
	if (policy6_pod(skb, skb->ingress_ifindex) != TC_ACT_OK)
		return TC_ACT_SHOT;
	return service6_datapath(skb, 1);
}

SEC("tc")
int bpfproxy_pod(struct __sk_buff *skb)
{
	if (eth_is_ipv6(skb))
		return bpfproxy_pod6(skb);
	return bpfproxy_pod4(skb);
}
