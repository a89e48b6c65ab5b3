// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP on the interfaces the AF_XDP vector engine runs on: frames of the
 * engine's services and replies of its flows go to its sockets, everything
 * else to the kernel (bpf/lib/xsk.h says which).
 *
 * Compiled as part of bpf/bpfproxy.c (one object, shared maps). */
#include "lib/parse6.h"
#include "lib/xsk.h"

/* IPv6: TCP/UDP right after the fixed header, to a frontend the engine
 * serves or a reply of its SNAT'd flows (xsk.h); everything else (ICMPv6,
 * extension headers, fragments) passes. */
static __noinline int xdp_afxdp6(struct xdp_md *ctx, __u32 slot)
{
	void		*data = (void *)(long)ctx->data;
	void		*end  = (void *)(long)ctx->data_end;
	struct ipv6hdr_ *ip6  = data + sizeof(struct ethhdr);
	struct ct6_key	 t    = {};
	__be16		*ports;

	if ((void *)(ip6 + 1) > end || (ip6->vtc >> 4) != 6)
		return XDP_PASS;
	if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
		return XDP_PASS;
	ports = (void *)(ip6 + 1);
	if ((void *)(ports + 2) > end)
		return XDP_PASS;
	t.saddr = ip6->saddr;
	t.daddr = ip6->daddr;
	t.sport = ports[0];
	t.dport = ports[1];
	t.proto = ip6->nexthdr;
	if (!xsk_wanted6(&t))
		return XDP_PASS;
	return bpf_redirect_map(&bpfproxy_xsks, slot, XDP_PASS);
}

SEC("xdp")
int bpfproxy_xdp_afxdp(struct xdp_md *ctx)
{
	void		    *data = (void *)(long)ctx->data;
	void		    *end  = (void *)(long)ctx->data_end;
	struct ethhdr	    *eth  = data;
	struct iphdr	    *ip;
	struct xsk_if_value *ifv;
	struct ct_key	     t	 = {};
	__u32		     ifi = ctx->ingress_ifindex;
	__u32		     q	 = ctx->rx_queue_index;
	__be16		    *ports;

	ifv = bpf_map_lookup_elem(&bpfproxy_xsk_ifs, &ifi);
	if (!ifv || q >= ifv->queues)
		return XDP_PASS;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return xdp_afxdp6(ctx, ifv->base + q);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return XDP_PASS;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return XDP_PASS;
	if (ip->protocol == IPPROTO_ICMP) {
		/* an ICMP error goes where the flow it quotes goes: to the
		 * engine when the flow is one of its own (xsk.h) */
		struct icmphdr *ic = (void *)ip + ip->ihl * 4;
		struct iphdr   *iip;

		if ((void *)(ic + 1) > end || !xsk_icmp_error(ic->type))
			return XDP_PASS;
		iip = (void *)(ic + 1);
		if ((void *)(iip + 1) > end || iip->version != 4 || iip->ihl < 5 ||
		    (iip->protocol != IPPROTO_TCP && iip->protocol != IPPROTO_UDP))
			return XDP_PASS;
		ports = (void *)iip + iip->ihl * 4;
		if ((void *)(ports + 2) > end)
			return XDP_PASS;
		/* the quoted packet went the other way */
		t.saddr = iip->daddr;
		t.daddr = iip->saddr;
		t.sport = ports[1];
		t.dport = ports[0];
		t.proto = iip->protocol;
	} else {
		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
			return XDP_PASS;
		ports = (void *)ip + ip->ihl * 4;
		if ((void *)(ports + 2) > end)
			return XDP_PASS;
		t.saddr = ip->saddr;
		t.daddr = ip->daddr;
		t.sport = ports[0];
		t.dport = ports[1];
		t.proto = ip->protocol;
	}
	if (!xsk_wanted(&t))
		return XDP_PASS;
	/* no socket in the slot (engine stopped): XDP_PASS */
	return bpf_redirect_map(&bpfproxy_xsks, ifv->base + q, XDP_PASS);
}
