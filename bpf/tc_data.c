// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC ingress on data (uplink) interfaces: NodePort, LoadBalancer and
 * external IPs from outside, and replies from backends on other nodes.
 *
 * Compiled as part of bpf/bpfproxy.c (one object, shared maps). */
#include "lib/service.h"
#include "lib/service6.h"

/* Each family in a function of its own: the verifier counts a call
 * chain's stack frames together, and both paths need room. */
static __noinline int bpfproxy_data4(struct __sk_buff *skb)
{
	return service_datapath(skb, 0);
}

SEC("tc")
int bpfproxy_data(struct __sk_buff *skb)
{
	if (eth_is_ipv6(skb)) {
		/* translated by the XDP program already (lib/xdp6.h) */
		if (xdp_translated(skb))
			return TC_ACT_OK;
		skb->cb[TUN6_CB_MARK] = 0; /* not through our tunnel (lib/tunnel6.h) */
	} else {
		int rc = bpfproxy_data4(skb);

		/* VXLAN from another node carrying an IPv6 service flow,
		 * decapsulated (lib/tunnel.h tun_rx()): the IPv6 path's */
		if (rc != TUN_INNER6)
			return rc;
	}
	return service6_datapath(skb, 0);
}
