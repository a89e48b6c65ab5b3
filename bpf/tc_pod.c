// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC ingress on pod-facing interfaces (host side of the pod's veth): traffic
 * from pods to services, and replies from backend pods.
 *
 * Compiled as part of bpf/bpfproxy.c (one object, shared maps). */
#include "lib/service.h"

SEC("tc")
int bpfproxy_pod(struct __sk_buff *skb)
{
	return service_datapath(skb, 1);
}
