/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 parsing: the fixed header, then at most IPV6_MAX_EXT_HDRS extension
 * headers (hop-by-hop, routing, destination options, fragment, AH) in a
 * bounded loop, then TCP/UDP/ICMPv6/SCTP (SCTP's first chunk read as
 * parse_ipv4() reads it: lib/sctp.h). No length field is trusted: the
 * payload length must fit the frame, and every extension header and the L4
 * header must fit inside the payload it claims. Every read goes through
 * bpf_skb_load_bytes(), which checks the offset against the packet.
 */
#ifndef BPFPROXY_PARSE6_H
#define BPFPROXY_PARSE6_H

#include "common.h"
#include "parse.h"
#include "sctp.h"
#include "types6.h"

#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif
#define AF_INET6	  10

#define IPPROTO_HOPOPTS_  0
#define IPPROTO_ROUTING_  43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_AH_	  51
#define IPPROTO_ICMPV6_	  58
#define IPPROTO_NONE_	  59
#define IPPROTO_DSTOPTS_  60

#define IPV6_HLEN	  40
#define IPV6_MAX_EXT_HDRS 8
/* Offsets inside an Ethernet + IPv6 frame. */
#define IP6_OFF		 ETH_HLEN
#define IP6_PLEN_OFF	 (IP6_OFF + 4)
#define IP6_HOPLIMIT_OFF (IP6_OFF + 7)
#define IP6_SRC_OFF	 (IP6_OFF + 8)
#define IP6_DST_OFF	 (IP6_OFF + 24)

/* ICMPv6 types (RFC 4443, RFC 4861). */
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG   2
#define ICMPV6_TIME_EXCEED  3
#define ICMPV6_PARAMPROB    4
#define ICMPV6_PORT_UNREACH 4 /* code of ICMPV6_DEST_UNREACH */

struct ipv6hdr_ {
	__u8	     vtc; /* version (4 bits), traffic class (high 4) */
	__u8	     tc_flow[3];
	__be16	     payload_len;
	__u8	     nexthdr;
	__u8	     hop_limit;
	union v6addr saddr;
	union v6addr daddr;
};

struct ipv6_frag_hdr_ {
	__u8   nexthdr;
	__u8   reserved;
	__be16 frag_off; /* offset (13 bits, 8-byte units) << 3 | M flag */
	__be32 id;
};

enum parse6_frag {
	FRAG6_NONE  = 0,
	FRAG6_FIRST = 1, /* offset 0, more fragments: ports are here */
	FRAG6_LATER = 2, /* offset > 0: no L4 header */
};

struct pkt6 {
	struct ct6_key tuple;	   /* as on the wire */
	__u32	       l4_off;	   /* from the start of the frame */
	__u32	       l3_len;	   /* 40 + payload length */
	__u16	       l4_hdr_len; /* TCP/UDP/ICMPv6/SCTP header length */
	__u8	       tcp_flags;  /* SCTP: what the first chunk stands for (lib/sctp.h) */
	__u8	       hop_limit;
	__u8	       icmp_type;
	__u8	       icmp_code;
	__u8	       frag; /* enum parse6_frag */
	__u8	       pad;
};

static __always_inline int v6_eq(const union v6addr *a, const union v6addr *b)
{
	return ((a->w[0] ^ b->w[0]) | (a->w[1] ^ b->w[1]) | (a->w[2] ^ b->w[2]) |
		(a->w[3] ^ b->w[3])) == 0;
}

static __always_inline int v6_is_zero(const union v6addr *a)
{
	return (a->w[0] | a->w[1] | a->w[2] | a->w[3]) == 0;
}

static __always_inline int eth_is_ipv6(struct __sk_buff *skb)
{
	void	      *data = (void *)(long)skb->data;
	struct ethhdr *eth  = data;

	if (data + sizeof(*eth) > (void *)(long)skb->data_end)
		return 0;
	return eth->h_proto == bpf_htons(ETH_P_IPV6);
}

static __always_inline int ipv6_is_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS_ || nh == IPPROTO_ROUTING_ || nh == IPPROTO_DSTOPTS_ ||
	       nh == IPPROTO_FRAGMENT_ || nh == IPPROTO_AH_;
}

/* parse_ipv6_direct(): not the common case, parse_ipv6_slow() takes it. */
#define PARSE6_SLOW (-1)

/* The common case, read in place as parse_ipv4() reads (no copy through
 * bpf_skb_load_bytes()): TCP or UDP right after the fixed header, both
 * headers in the skb's linear data. The same checks and results as
 * parse_ipv6_slow(), which takes every other packet (extension headers,
 * ICMPv6, SCTP, headers past the linear data). */
static __always_inline int parse_ipv6_direct(struct __sk_buff *skb, struct pkt6 *p)
{
	void		*data = (void *)(long)skb->data;
	void		*dend = (void *)(long)skb->data_end;
	struct ipv6hdr_ *ip   = data + ETH_HLEN;
	struct tcphdr	*th   = (void *)(ip + 1);
	__u32		 plen, end, off = ETH_HLEN + IPV6_HLEN;

	/* a UDP header is 8 bytes; short UDP datagrams go the slow way */
	if ((void *)(th + 1) > dend)
		return PARSE6_SLOW;
	if ((ip->nexthdr != IPPROTO_TCP && ip->nexthdr != IPPROTO_UDP) || (ip->vtc >> 4) != 6)
		return PARSE6_SLOW;
	plen = bpf_ntohs(ip->payload_len);
	if (plen == 0 && skb->gso_size)
		plen = skb->len - ETH_HLEN - IPV6_HLEN;
	if ((__u64)plen + IPV6_HLEN + ETH_HLEN > skb->len)
		return PARSE_MALFORMED;
	end		= ETH_HLEN + IPV6_HLEN + plen;
	p->l3_len	= IPV6_HLEN + plen;
	p->tuple.saddr	= ip->saddr;
	p->tuple.daddr	= ip->daddr;
	p->tuple.proto	= ip->nexthdr;
	p->tuple.pad[0] = p->tuple.pad[1] = p->tuple.pad[2] = 0;
	p->hop_limit					    = ip->hop_limit;
	p->icmp_type					    = 0;
	p->icmp_code					    = 0;
	p->frag						    = FRAG6_NONE;
	p->pad						    = 0;
	p->l4_off					    = off;
	p->tuple.sport					    = th->source;
	p->tuple.dport					    = th->dest;
	if (ip->nexthdr == IPPROTO_UDP) {
		if (off + sizeof(struct udphdr) > end)
			return PARSE_MALFORMED;
		p->tcp_flags  = 0;
		p->l4_hdr_len = sizeof(struct udphdr);
		return PARSE_OK;
	}
	if (off + sizeof(*th) > end || th->doff < 5 || off + th->doff * 4 > end)
		return PARSE_MALFORMED;
	p->tcp_flags  = ((__u8 *)th)[13];
	p->l4_hdr_len = th->doff * 4;
	return PARSE_OK;
}

/* Parse Ethernet + IPv6 (+ extension headers) + TCP/UDP/ICMPv6/SCTP. Results as
 * parse_ipv4(): PARSE_NOT_IPV4 means "not IPv6" here. */
static __always_inline enum parse_result parse_ipv6_slow(struct __sk_buff *skb, struct pkt6 *p)
{
	struct ipv6hdr_ ip;
	__u32		off, end, plen;
	__u8		nh;
	int		i;

	if (bpf_skb_load_bytes(skb, IP6_OFF, &ip, sizeof(ip)))
		return PARSE_MALFORMED;
	if ((ip.vtc >> 4) != 6)
		return PARSE_MALFORMED;
	plen = bpf_ntohs(ip.payload_len);
	/* BIG TCP (GSO over 64K) carries payload length 0; the skb's length
	 * is the truth there. */
	if (plen == 0 && skb->gso_size)
		plen = skb->len - ETH_HLEN - IPV6_HLEN;
	if ((__u64)plen + IPV6_HLEN + ETH_HLEN > skb->len)
		return PARSE_MALFORMED;
	end		= ETH_HLEN + IPV6_HLEN + plen;
	p->l3_len	= IPV6_HLEN + plen;
	p->tuple.saddr	= ip.saddr;
	p->tuple.daddr	= ip.daddr;
	p->tuple.sport	= 0;
	p->tuple.dport	= 0;
	p->tuple.pad[0] = p->tuple.pad[1] = p->tuple.pad[2] = 0;
	p->hop_limit					    = ip.hop_limit;
	p->l4_hdr_len					    = 0;
	p->tcp_flags					    = 0;
	p->icmp_type					    = 0;
	p->icmp_code					    = 0;
	p->frag						    = FRAG6_NONE;
	p->pad						    = 0;

	off = ETH_HLEN + IPV6_HLEN;
	nh  = ip.nexthdr;
	/* The common case, TCP or UDP right after the fixed header, skips the
	 * extension header walk. */
	for (i = 0; i < IPV6_MAX_EXT_HDRS && nh != IPPROTO_TCP && nh != IPPROTO_UDP; i++) {
		__u8 h[2];

		if (!ipv6_is_ext(nh))
			break;
		if (off + 8 > end || bpf_skb_load_bytes(skb, off, h, sizeof(h)))
			return PARSE_MALFORMED;
		if (nh == IPPROTO_FRAGMENT_) {
			struct ipv6_frag_hdr_ fh;

			if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)))
				return PARSE_MALFORMED;
			if (fh.frag_off & bpf_htons(0xfff8))
				p->frag = FRAG6_LATER;
			else if (fh.frag_off & bpf_htons(1))
				p->frag = FRAG6_FIRST;
			off += 8;
		} else if (nh == IPPROTO_AH_) {
			off += ((__u32)h[1] + 2) * 4;
		} else {
			off += ((__u32)h[1] + 1) * 8;
		}
		nh = h[0];
		if (off > end)
			return PARSE_MALFORMED;
		if (p->frag == FRAG6_LATER)
			break;
	}
	p->tuple.proto = nh;
	p->l4_off      = off;
	if (p->frag == FRAG6_LATER)
		return PARSE_FRAGMENT;
	if (ipv6_is_ext(nh))
		return PARSE_NOT_L4; /* more extension headers than we walk: the stack decides */
	if (nh == IPPROTO_TCP) {
		struct tcphdr th;

		if (off + sizeof(th) > end || bpf_skb_load_bytes(skb, off, &th, sizeof(th)))
			return PARSE_MALFORMED;
		if (th.doff < 5 || off + th.doff * 4 > end)
			return PARSE_MALFORMED;
		p->tuple.sport = th.source;
		p->tuple.dport = th.dest;
		p->tcp_flags   = ((__u8 *)&th)[13];
		p->l4_hdr_len  = th.doff * 4;
	} else if (nh == IPPROTO_UDP) {
		struct udphdr uh;

		if (off + sizeof(uh) > end || bpf_skb_load_bytes(skb, off, &uh, sizeof(uh)))
			return PARSE_MALFORMED;
		p->tuple.sport = uh.source;
		p->tuple.dport = uh.dest;
		p->l4_hdr_len  = sizeof(uh);
	} else if (nh == IPPROTO_ICMPV6_) {
		__u8 h[4];

		if (off + 4 > end || bpf_skb_load_bytes(skb, off, h, sizeof(h)))
			return PARSE_MALFORMED;
		p->icmp_type  = h[0];
		p->icmp_code  = h[1];
		p->l4_hdr_len = 4;
	} else if (nh == IPPROTO_SCTP) {
		/* The common header and a chunk header at least, inside the
		 * payload: a packet without a chunk is one no SCTP stack
		 * accepts. */
		struct sctp_first sh;

		if (off + sizeof(sh) > end || bpf_skb_load_bytes(skb, off, &sh, sizeof(sh)))
			return PARSE_MALFORMED;
		p->tuple.sport = sh.source;
		p->tuple.dport = sh.dest;
		p->tcp_flags   = sctp_ct_flags(sh.chunk_type, sh.vtag);
		p->l4_hdr_len  = SCTP_HDR_LEN;
	} else {
		return PARSE_NOT_L4;
	}
	return PARSE_OK;
}

static __always_inline enum parse_result parse_ipv6(struct __sk_buff *skb, struct pkt6 *p)
{
	int r;

	if (!eth_is_ipv6(skb))
		return PARSE_NOT_IPV4;
	r = parse_ipv6_direct(skb, p);
	return r == PARSE6_SLOW ? parse_ipv6_slow(skb, p) : (enum parse_result)r;
}

#endif /* BPFPROXY_PARSE6_H */
