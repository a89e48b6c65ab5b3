/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet rewrites: DNAT/SNAT of the outer tuple with incremental checksum
 * updates (IPv4 header, TCP/UDP with pseudo header, SCTP's CRC32c when a
 * port changes: lib/sctp.h), and the translation of ICMP errors that quote
 * a NAT'd flow, inner header included.
 */
#ifndef BPFPROXY_NAT_H
#define BPFPROXY_NAT_H

#include "common.h"
#include "parse.h"

static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->tuple.proto == IPPROTO_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF);
}

static __always_inline int rewrite_addr(struct __sk_buff *skb, const struct pkt *p, __u32 off,
					__be32 from, __be32 to)
{
	__u64 l4flags = BPF_F_PSEUDO_HDR | sizeof(to);

	if (from == to)
		return 0;
	if (p->tuple.proto == IPPROTO_UDP)
		l4flags |= BPF_F_MARK_MANGLED_0;
	/* SCTP's CRC covers no pseudo header: an address leaves it as is. */
	if (p->tuple.proto != IPPROTO_ICMP && p->tuple.proto != IPPROTO_SCTP &&
	    bpf_l4_csum_replace(skb, l4_csum_off(p), from, to, l4flags))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, sizeof(to)))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

static __always_inline int rewrite_port(struct __sk_buff *skb, const struct pkt *p, __u32 off,
					__be16 from, __be16 to)
{
	__u64 l4flags = sizeof(to);

	if (from == to)
		return 0;
	if (p->tuple.proto == IPPROTO_UDP)
		l4flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), from, to, l4flags))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + off, &to, sizeof(to), 0);
}

/* Rewrite the packet's tuple p->tuple into 'to'. Returns 0 or -1. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct pkt *p, __be32 saddr,
				       __be16 sport, __be32 daddr, __be16 dport)
{
	if (rewrite_addr(skb, p, IP_SRC_OFF, p->tuple.saddr, saddr) ||
	    rewrite_addr(skb, p, IP_DST_OFF, p->tuple.daddr, daddr))
		return -1;
	if (p->tuple.proto == IPPROTO_SCTP) {
		if (sctp_rewrite_ports(skb, p->l4_off, p->tot_len - p->ihl_bytes, p->tuple.sport,
				       p->tuple.dport, sport, dport))
			return -1;
	} else if (rewrite_port(skb, p, 0, p->tuple.sport, sport) ||
		   rewrite_port(skb, p, 2, p->tuple.dport, dport)) {
		/* source and dest are the first two 16-bit words of TCP and UDP */
		return -1;
	}
	p->tuple.saddr = saddr;
	p->tuple.daddr = daddr;
	p->tuple.sport = sport;
	p->tuple.dport = dport;
	return 0;
}

/* Decrement the TTL before we forward a packet ourselves, as a router
 * would; the caller has left packets with a TTL of 0 or 1 to the stack.
 * Returns 0 or -1. */
static __always_inline int ttl_decrement(struct __sk_buff *skb, const struct pkt *p)
{
	/* TTL and protocol share a 16-bit word at offset 8 of the header. */
	__be16 old = bpf_htons(((__u16)p->ttl << 8) | p->tuple.proto);
	__be16 new = bpf_htons(((__u16)(p->ttl - 1) << 8) | p->tuple.proto);
	__u8 ttl   = p->ttl - 1;

	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new)))
		return -1;
	return bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, ttl), &ttl, 1, 0);
}

/* ---- ICMP errors quoting a NAT'd flow ----------------------------------- */

/* Where the parts of an ICMP error sit in the frame. */
struct icmp_quote {
	struct ct_key inner;	    /* the quoted flow, as quoted */
	__u32	      end;	    /* end of the outer IPv4 packet in the frame */
	__u32	      icmp_off;	    /* ICMP header */
	__u32	      inner_ip_off; /* quoted IPv4 header */
	__u32	      inner_l4_off; /* quoted L4 header (8 bytes at least) */
};

static __always_inline int icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB;
}

/* Read the flow an ICMP error quotes. Returns 0, 1 (not an error we can
 * translate: pass) or -1 (malformed). */
static __always_inline int icmp_err_parse(struct __sk_buff *skb, const struct pkt *p,
					  struct icmp_quote *e)
{
	struct iphdr iip;
	__be16	     ports[2];

	if (!icmp_is_error(p->icmp_type))
		return 1;
	e->icmp_off	= p->l4_off;
	e->end		= ETH_HLEN + p->tot_len;
	e->inner_ip_off = p->l4_off + sizeof(struct icmphdr);
	if (bpf_skb_load_bytes(skb, e->inner_ip_off, &iip, sizeof(iip)))
		return -1;
	if (iip.version != 4 || iip.ihl < 5)
		return -1;
	if (iip.protocol != IPPROTO_TCP && iip.protocol != IPPROTO_UDP &&
	    iip.protocol != IPPROTO_SCTP)
		return 1;
	e->inner_l4_off = e->inner_ip_off + iip.ihl * 4;
	if (e->inner_l4_off > 0xffff)
		return -1;
	/* The quote must hold the inner header and the 8 bytes after it
	 * inside the outer packet: bytes past it are not the sender's quote. */
	if (e->inner_l4_off + 8 > e->end)
		return 1;
	if (bpf_skb_load_bytes(skb, e->inner_l4_off, ports, sizeof(ports)))
		return -1;
	e->inner.saddr = iip.saddr;
	e->inner.daddr = iip.daddr;
	e->inner.sport = ports[0];
	e->inner.dport = ports[1];
	e->inner.proto = iip.protocol;
	return 0;
}

/* Fold a change of a 16- or 32-bit field inside the ICMP payload into the
 * ICMP checksum and write it. */
static __always_inline int icmp_payload_store(struct __sk_buff *skb, const struct icmp_quote *e,
					      __u32 off, __u32 from, __u32 to, __u32 size)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, e->icmp_off + offsetof(struct icmphdr, checksum), from, to,
				size))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, size, 0);
}

/* Rewrite the quoted flow to 'to' (addresses and ports), keeping the quoted
 * IPv4 checksum, the quoted L4 checksum (when it was quoted) and the ICMP
 * checksum right. */
static __always_inline int icmp_err_rewrite_inner(struct __sk_buff *skb, const struct icmp_quote *e,
						  const struct ct_key *to)
{
	__u32 iip_csum_off = e->inner_ip_off + offsetof(struct iphdr, check);
	__u32 il4_csum_off =
		e->inner_l4_off + (e->inner.proto == IPPROTO_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF);
	__u16 ipc, nipc, l4c, nl4c;
	int   have_l4c;

	if (bpf_skb_load_bytes(skb, iip_csum_off, &ipc, sizeof(ipc)))
		return -1;
	nipc = csum_replace4(ipc, e->inner.saddr, to->saddr);
	nipc = csum_replace4(nipc, e->inner.daddr, to->daddr);

	/* The quoted L4 checksum counts only when it was quoted: bytes past
	 * the outer packet (padding, a trailer) are not ours to touch. A
	 * quoted SCTP CRC covers bytes the quote does not hold: it stays as
	 * the sender wrote it (the receiver of the error matches ports and
	 * verification tag, never the quoted CRC). */
	have_l4c = e->inner.proto != IPPROTO_SCTP && il4_csum_off + sizeof(l4c) <= e->end &&
		   bpf_skb_load_bytes(skb, il4_csum_off, &l4c, sizeof(l4c)) == 0;
	if (have_l4c && !(e->inner.proto == IPPROTO_UDP && l4c == 0)) {
		nl4c = csum_replace4(l4c, e->inner.saddr, to->saddr);
		nl4c = csum_replace4(nl4c, e->inner.daddr, to->daddr);
		nl4c = csum_replace2(nl4c, e->inner.sport, to->sport);
		nl4c = csum_replace2(nl4c, e->inner.dport, to->dport);
		if (e->inner.proto == IPPROTO_UDP && nl4c == 0)
			nl4c = 0xffff;
		if (icmp_payload_store(skb, e, il4_csum_off, l4c, nl4c, 2))
			return -1;
	}
	if (icmp_payload_store(skb, e, iip_csum_off, ipc, nipc, 2) ||
	    icmp_payload_store(skb, e, e->inner_ip_off + offsetof(struct iphdr, saddr),
			       e->inner.saddr, to->saddr, 4) ||
	    icmp_payload_store(skb, e, e->inner_ip_off + offsetof(struct iphdr, daddr),
			       e->inner.daddr, to->daddr, 4) ||
	    icmp_payload_store(skb, e, e->inner_l4_off, e->inner.sport, to->sport, 2) ||
	    icmp_payload_store(skb, e, e->inner_l4_off + 2, e->inner.dport, to->dport, 2))
		return -1;
	return 0;
}

#endif /* BPFPROXY_NAT_H */
