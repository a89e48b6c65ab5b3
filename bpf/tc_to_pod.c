// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC egress on pod-facing interfaces (host side of the pod's veth): network
 * policy for everything the kernel routes into the pod (lib/policy.h
 * policy_to_pod(); IPv6: lib/policy6.h), and the replies of host-network
 * service endpoints (as bpfproxy_host on the other interfaces).
 *
 * Compiled as part of bpf/bpfproxy.c (one object, shared maps). */
#include "lib/policy6.h"
#include "lib/service.h"
#include "lib/service6.h"

/* Each family in a function of its own: the verifier counts a call
 * chain's stack frames together (tc_data.c). */
static __noinline int bpfproxy_to_pod4(struct __sk_buff *skb)
{
	return service_to_pod(skb);
}

/* IPv6: the pod's ingress policy (lib/policy6.h policy6_to_pod()), then
 * host-network endpoints' replies. */
static __noinline int bpfproxy_to_pod6(struct __sk_buff *skb)
{
	if (policy6_to_pod(skb, skb->ifindex) != TC_ACT_OK)
		return TC_ACT_SHOT;
	return service6_host_reply(skb);
}

SEC("tc")
int bpfproxy_to_pod(struct __sk_buff *skb)
{
	if (eth_is_ipv6(skb))
		return bpfproxy_to_pod6(skb);
	return bpfproxy_to_pod4(skb);
}
