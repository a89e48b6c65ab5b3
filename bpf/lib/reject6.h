/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 answers built from the packet itself and sent back out of the
 * interface it came in on: TCP RST and ICMPv6 destination unreachable (port
 * unreachable) for services without endpoints, ICMPv6 packet too big when
 * the next hop's MTU is too small.
 */
#ifndef BPFPROXY_REJECT6_H
#define BPFPROXY_REJECT6_H

#include "common.h"
#include "drop.h"
#include "parse6.h"

struct pseudo6_hdr {
	union v6addr saddr;
	union v6addr daddr;
	__be32	     len;
	__u8	     zero[3];
	__u8	     nexthdr;
};

static __always_inline void reply6_ip(struct ipv6hdr_ *ip, const struct pkt6 *p, __u8 nexthdr,
				      __u16 plen)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->vtc		= 6 << 4;
	ip->payload_len = bpf_htons(plen);
	ip->nexthdr	= nexthdr;
	ip->hop_limit	= 64;
	ip->saddr	= p->tuple.daddr;
	ip->daddr	= p->tuple.saddr;
}

static __always_inline __u32 pseudo6_sum(const struct ipv6hdr_ *ip, __u8 nexthdr, __u32 len)
{
	struct pseudo6_hdr ph = {
		.saddr	 = ip->saddr,
		.daddr	 = ip->daddr,
		.len	 = bpf_htonl(len),
		.nexthdr = nexthdr,
	};

	return bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
}

static __always_inline int reply6_send(struct __sk_buff *skb, const struct ethhdr *eth,
				       const struct ipv6hdr_ *ip, const void *l4, __u32 l4len,
				       enum reason r)
{
	if (bpf_skb_store_bytes(skb, 0, eth, ETH_HLEN, 0) ||
	    bpf_skb_store_bytes(skb, IP6_OFF, ip, sizeof(*ip), 0) ||
	    bpf_skb_store_bytes(skb, IP6_OFF + sizeof(*ip), l4, l4len, 0))
		return drop(skb, REASON_REJECT_FAILED);
	count_reason(skb, r);
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline void reply6_eth(struct __sk_buff *skb, struct ethhdr *out, int *err)
{
	struct ethhdr in;

	*err = bpf_skb_load_bytes(skb, 0, &in, sizeof(in));
	__builtin_memcpy(out->h_dest, in.h_source, ETH_ALEN);
	__builtin_memcpy(out->h_source, in.h_dest, ETH_ALEN);
	out->h_proto = bpf_htons(ETH_P_IPV6);
}

static __noinline int reject6_tcp(struct __sk_buff *skb, const struct pkt6 *p)
{
	struct ethhdr	eth;
	struct ipv6hdr_ ip;
	struct tcphdr	ith, tcp;
	__u32		payload, sum;
	int		err;

	reply6_eth(skb, &eth, &err);
	if (err || bpf_skb_load_bytes(skb, p->l4_off, &ith, sizeof(ith)))
		return drop(skb, REASON_REJECT_FAILED);
	if (ith.rst) /* never answer a RST */
		return drop(skb, REASON_NO_ENDPOINTS);
	payload = ETH_HLEN + p->l3_len - p->l4_off - ith.doff * 4;

	reply6_ip(&ip, p, IPPROTO_TCP, sizeof(tcp));
	__builtin_memset(&tcp, 0, sizeof(tcp));
	tcp.source = ith.dest;
	tcp.dest   = ith.source;
	tcp.doff   = 5;
	tcp.rst	   = 1;
	if (ith.ack) {
		tcp.seq = ith.ack_seq;
	} else {
		tcp.ack	    = 1;
		tcp.ack_seq = bpf_htonl(bpf_ntohl(ith.seq) + payload + ith.syn + ith.fin);
	}
	sum	  = pseudo6_sum(&ip, IPPROTO_TCP, sizeof(tcp));
	sum	  = bpf_csum_diff(NULL, 0, (__be32 *)&tcp, sizeof(tcp), sum);
	tcp.check = csum_fold32(sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(ip) + sizeof(tcp), 0))
		return drop(skb, REASON_REJECT_FAILED);
	return reply6_send(skb, &eth, &ip, &tcp, sizeof(tcp), REASON_NO_ENDPOINTS);
}

/* Quoted bytes: the packet's first ICMP6_QUOTE_MAX bytes, or all of a
 * shorter one (RFC 4443: as much as fits in 1280 bytes; 128 covers the IPv6
 * header, the usual extension headers and the whole TCP header, so a
 * CHECKSUM_PARTIAL skb is not trimmed short of its L4 checksum field). The
 * length depends on the packet's length only, never on the parsed header
 * offsets: the verifier then needs no exact offset, and the extension
 * header walk's paths merge (a size derived from the offset would keep
 * every path apart). */
#define ICMP6_QUOTE_MAX 128

/* Answer with an ICMPv6 error (type/code and its 32-bit field: the MTU for
 * packet too big) quoting the packet's first bytes. */
static __noinline int icmp6_reply(struct __sk_buff *skb, const struct pkt6 *p, __u16 type_code,
				  __u32 info, enum reason r)
{
	struct ethhdr	eth;
	struct ipv6hdr_ ip;
	struct {
		__u8   type;
		__u8   code;
		__be16 csum;
		__be32 info;
	} icmp;
	__u8  quote[ICMP6_QUOTE_MAX];
	__u32 qlen;
	__u32 sum;
	int   err;

	if (p->l3_len >= ICMP6_QUOTE_MAX)
		qlen = ICMP6_QUOTE_MAX;
	else
		qlen = p->l3_len & 0x7c; /* a multiple of 4, as bpf_csum_diff() wants */
	if (qlen < IPV6_HLEN + 8 || qlen > ICMP6_QUOTE_MAX)
		return drop(skb, REASON_REJECT_FAILED);
	reply6_eth(skb, &eth, &err);
	if (err || bpf_skb_load_bytes(skb, IP6_OFF, quote, qlen))
		return drop(skb, REASON_REJECT_FAILED);

	reply6_ip(&ip, p, IPPROTO_ICMPV6_, sizeof(icmp) + qlen);
	icmp.type = type_code >> 8;
	icmp.code = type_code & 0xff;
	icmp.csum = 0;
	icmp.info = bpf_htonl(info);
	sum	  = pseudo6_sum(&ip, IPPROTO_ICMPV6_, sizeof(icmp) + qlen);
	sum	  = bpf_csum_diff(NULL, 0, (__be32 *)&icmp, sizeof(icmp), sum);
	sum	  = bpf_csum_diff(NULL, 0, (__be32 *)quote, qlen, sum);
	icmp.csum = csum_fold32(sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + qlen, 0) ||
	    bpf_skb_adjust_room(skb, sizeof(ip) + sizeof(icmp), BPF_ADJ_ROOM_MAC, 0))
		return drop(skb, REASON_REJECT_FAILED);
	return reply6_send(skb, &eth, &ip, &icmp, sizeof(icmp), r);
}

static __always_inline int reject6(struct __sk_buff *skb, const struct pkt6 *p)
{
	if (p->tuple.proto == IPPROTO_TCP)
		return reject6_tcp(skb, p);
	return icmp6_reply(skb, p, ICMPV6_DEST_UNREACH << 8 | ICMPV6_PORT_UNREACH, 0,
			   REASON_NO_ENDPOINTS);
}

#endif /* BPFPROXY_REJECT6_H */
