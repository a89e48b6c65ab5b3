/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bounds-checked header parsing with a cursor (xdp-tutorial style). */
#ifndef BPFPROXY_PARSE_H
#define BPFPROXY_PARSE_H

#include "common.h"
#include "sctp.h"

struct cursor {
	void *pos;
	void *end;
};

/* Return a pointer to the next len bytes and advance, or NULL when the
 * packet is shorter. len must be a constant for the verifier. */
#define cursor_pull(c, len)                                                                        \
	({                                                                                         \
		void *__p = (c)->pos;                                                              \
		if (__p + (len) > (c)->end)                                                        \
			__p = NULL;                                                                \
		else                                                                               \
			(c)->pos = __p + (len);                                                    \
		__p;                                                                               \
	})

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IPV4,	 /* not for us: pass */
	PARSE_NOT_L4,	 /* IPv4 but no protocol we handle: pass */
	PARSE_FRAGMENT,	 /* non-first fragment */
	PARSE_MALFORMED, /* drop */
};

/* What the programs need to know about a packet. Offsets are from the start
 * of the frame; pointers are not kept because any helper that writes the
 * packet invalidates them. */
struct pkt {
	struct ct_key tuple; /* as on the wire */
	__u32	      l4_off;
	__u32	      ihl_bytes;
	__u16	      tot_len;	  /* IPv4 total length, host order */
	__u16	      l4_hdr_len; /* TCP/UDP/ICMP/SCTP header length */
	__u8	      tcp_flags;  /* SCTP: what the first chunk stands for (lib/sctp.h) */
	__u8	      ttl;
	__u8	      icmp_type;
	__u8	      icmp_code;
	__be16	      frag;
};

/* Parse Ethernet + IPv4 + TCP/UDP/ICMP/SCTP from a frame at data..data_end whose
 * whole length (linear part and fragments) is len; gso_size is the
 * segment size of a GSO packet (0: none). Shared by the TC hooks
 * (parse_ipv4) and XDP (parse_ipv4_xdp). For ICMP, ports stay 0 and the
 * type/code are filled in; lib/nat.h looks inside errors. No length field is
 * trusted: the IPv4 total length must fit the frame and hold the L4 header
 * it claims. */
static __always_inline enum parse_result parse_ipv4_at(void *data, void *data_end, __u32 len,
						       __u32 gso_size, struct pkt *p)
{
	struct cursor c = {
		.pos = data,
		.end = data_end,
	};
	struct ethhdr *eth;
	struct iphdr  *ip;

	eth = cursor_pull(&c, sizeof(*eth));
	if (!eth)
		return PARSE_NOT_IPV4;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;

	ip = cursor_pull(&c, sizeof(*ip));
	if (!ip)
		return PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	p->ihl_bytes   = ip->ihl * 4;
	p->l4_off      = ETH_HLEN + p->ihl_bytes;
	p->tuple.saddr = ip->saddr;
	p->tuple.daddr = ip->daddr;
	p->tuple.proto = ip->protocol;
	p->tuple.sport = 0;
	p->tuple.dport = 0;
	p->ttl	       = ip->ttl;
	p->frag	       = ip->frag_off;
	p->tot_len     = bpf_ntohs(ip->tot_len);
	p->l4_hdr_len  = 0;
	p->tcp_flags   = 0;
	p->icmp_type   = 0;
	p->icmp_code   = 0;

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP &&
	    ip->protocol != IPPROTO_ICMP && ip->protocol != IPPROTO_SCTP)
		return PARSE_NOT_L4;
	/* BIG TCP (GSO packets over 64K) carries total length 0; the skb's
	 * length is the truth there. */
	if (p->tot_len == 0 && gso_size)
		p->tot_len = len - ETH_HLEN > 0xffff ? 0xffff : len - ETH_HLEN;
	if (p->tot_len < p->ihl_bytes || (__u32)p->tot_len + ETH_HLEN > len)
		return PARSE_MALFORMED;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return PARSE_FRAGMENT;

	/* Skip IP options: variable length, so re-anchor the cursor. */
	c.pos = data + p->l4_off;
	if (c.pos > c.end)
		return PARSE_MALFORMED;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = cursor_pull(&c, sizeof(*th));

		if (!th)
			return PARSE_MALFORMED;
		if (th->doff < 5)
			return PARSE_MALFORMED;
		p->tuple.sport = th->source;
		p->tuple.dport = th->dest;
		p->tcp_flags   = ((__u8 *)th)[13];
		p->l4_hdr_len  = th->doff * 4;
		if ((__u32)p->tot_len < p->ihl_bytes + p->l4_hdr_len)
			return PARSE_MALFORMED;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = cursor_pull(&c, sizeof(*uh));

		if (!uh)
			return PARSE_MALFORMED;
		p->tuple.sport = uh->source;
		p->tuple.dport = uh->dest;
		p->l4_hdr_len  = sizeof(*uh);
		if ((__u32)p->tot_len < p->ihl_bytes + sizeof(*uh))
			return PARSE_MALFORMED;
	} else if (ip->protocol == IPPROTO_SCTP) {
		/* The common header and a chunk header at least: a packet
		 * without a chunk is one no SCTP stack accepts. */
		struct sctp_first *sh = cursor_pull(&c, sizeof(*sh));

		if (!sh)
			return PARSE_MALFORMED;
		p->tuple.sport = sh->source;
		p->tuple.dport = sh->dest;
		p->tcp_flags   = sctp_ct_flags(sh->chunk_type, sh->vtag);
		p->l4_hdr_len  = SCTP_HDR_LEN;
		if ((__u32)p->tot_len < p->ihl_bytes + sizeof(*sh))
			return PARSE_MALFORMED;
	} else {
		struct icmphdr *ih = cursor_pull(&c, sizeof(*ih));

		if (!ih)
			return PARSE_MALFORMED;
		p->icmp_type  = ih->type;
		p->icmp_code  = ih->code;
		p->l4_hdr_len = sizeof(*ih);
		if ((__u32)p->tot_len < p->ihl_bytes + sizeof(*ih))
			return PARSE_MALFORMED;
	}
	return PARSE_OK;
}

static __always_inline enum parse_result parse_ipv4(struct __sk_buff *skb, struct pkt *p)
{
	return parse_ipv4_at((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len,
			     skb->gso_size, p);
}

/* XDP frames are linear here (the program is not loaded with frags). */
static __always_inline enum parse_result parse_ipv4_xdp(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end  = (void *)(long)ctx->data_end;

	return parse_ipv4_at(data, end, (__u32)(end - data), 0, p);
}

#endif /* BPFPROXY_PARSE_H */
