// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC egress on pod-facing and data interfaces: replies of host-network
 * service endpoints on this node (the API server, node-local DNS, ingress
 * controllers on the host network), reverse-translated on their way out.
 *
 * Compiled as part of bpf/bpfproxy.c (one object, shared maps). */
#include "lib/service.h"
#include "lib/service6.h"

/* Each family in a function of its own: the verifier counts a call
 * chain's stack frames together (tc_data.c). */
static __noinline int bpfproxy_host4(struct __sk_buff *skb)
{
	return service_host_reply(skb);
}

SEC("tc")
int bpfproxy_host(struct __sk_buff *skb)
{
	if (eth_is_ipv6(skb))
		return service6_host_reply(skb);
	return bpfproxy_host4(skb);
}
