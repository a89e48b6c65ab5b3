// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC ingress on data (uplink) interfaces: NodePort, LoadBalancer and
 * external IPs from outside, and replies from backends on other nodes.
 *
 * Compiled as part of bpf/bpfproxy.c (one object, shared maps). */
#include "lib/service.h"

SEC("tc")
int bpfproxy_data(struct __sk_buff *skb)
{
	return service_datapath(skb, 0);
}
