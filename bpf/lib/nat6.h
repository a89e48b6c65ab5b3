/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 packet rewrites. IPv6 has no header checksum: an address change is
 * folded into the L4 checksum only, whose pseudo-header covers it (TCP, UDP
 * and ICMPv6 alike). And the translation of ICMPv6 errors that quote a
 * NAT'd flow (destination unreachable, packet too big, time exceeded,
 * parameter problem), inner header included, so PMTU discovery works
 * through a service. SCTP's CRC32c covers no pseudo header: an address
 * change leaves it as is, a port change is folded in (lib/sctp.h).
 */
#ifndef BPFPROXY_NAT6_H
#define BPFPROXY_NAT6_H

#include "common.h"
#include "parse6.h"
#include "sctp.h"

static __always_inline __u32 l4_csum_off6(__u8 proto, __u32 l4_off)
{
	if (proto == IPPROTO_TCP)
		return l4_off + TCP_CSUM_OFF;
	if (proto == IPPROTO_UDP)
		return l4_off + UDP_CSUM_OFF;
	return l4_off + 2; /* ICMPv6 */
}

/* Rewrite a 16-byte address at 'off' and fold the change into the L4
 * checksum (pseudo-header). */
static __always_inline int rewrite_addr6(struct __sk_buff *skb, const struct pkt6 *p, __u32 off,
					 const union v6addr *from, const union v6addr *to)
{
	__u64 flags = BPF_F_PSEUDO_HDR;
	__s64 diff;

	if (v6_eq(from, to))
		return 0;
	if (p->tuple.proto == IPPROTO_SCTP) /* no pseudo header in its CRC32c */
		return bpf_skb_store_bytes(skb, off, to, sizeof(*to), 0);
	if (p->tuple.proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	diff = bpf_csum_diff((__be32 *)from->w, sizeof(*from), (__be32 *)to->w, sizeof(*to), 0);
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, l4_csum_off6(p->tuple.proto, p->l4_off), 0, (__u32)diff,
				flags))
		return -1;
	return bpf_skb_store_bytes(skb, off, to, sizeof(*to), 0);
}

static __always_inline int rewrite_port6(struct __sk_buff *skb, const struct pkt6 *p, __u32 off,
					 __be16 from, __be16 to)
{
	__u64 flags = sizeof(to);

	if (from == to)
		return 0;
	if (p->tuple.proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, l4_csum_off6(p->tuple.proto, p->l4_off), from, to, flags))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + off, &to, sizeof(to), 0);
}

/* Rewrite only the addresses (an ICMPv6 packet: no ports). No SCTP path,
 * so no CRC32c call under it: the ICMP-error path is the pod program's
 * deepest call chain and has no stack left for one. */
static __always_inline int nat6_rewrite_addrs(struct __sk_buff *skb, struct pkt6 *p,
					      const struct ct6_key *to)
{
	if (rewrite_addr6(skb, p, IP6_SRC_OFF, &p->tuple.saddr, &to->saddr) ||
	    rewrite_addr6(skb, p, IP6_DST_OFF, &p->tuple.daddr, &to->daddr))
		return -1;
	p->tuple.saddr = to->saddr;
	p->tuple.daddr = to->daddr;
	return 0;
}

/* Rewrite the packet's tuple into 'to' (ports only for TCP/UDP/SCTP). */
static __always_inline int nat6_rewrite(struct __sk_buff *skb, struct pkt6 *p,
					const struct ct6_key *to)
{
	if (rewrite_addr6(skb, p, IP6_SRC_OFF, &p->tuple.saddr, &to->saddr) ||
	    rewrite_addr6(skb, p, IP6_DST_OFF, &p->tuple.daddr, &to->daddr))
		return -1;
	if (p->tuple.proto == IPPROTO_TCP || p->tuple.proto == IPPROTO_UDP) {
		if (rewrite_port6(skb, p, 0, p->tuple.sport, to->sport) ||
		    rewrite_port6(skb, p, 2, p->tuple.dport, to->dport))
			return -1;
		p->tuple.sport = to->sport;
		p->tuple.dport = to->dport;
	} else if (p->tuple.proto == IPPROTO_SCTP) {
		if (sctp_rewrite_ports(skb, p->l4_off, ETH_HLEN + p->l3_len - p->l4_off,
				       p->tuple.sport, p->tuple.dport, to->sport, to->dport))
			return -1;
		p->tuple.sport = to->sport;
		p->tuple.dport = to->dport;
	}
	p->tuple.saddr = to->saddr;
	p->tuple.daddr = to->daddr;
	return 0;
}

/* ---- ICMPv6 errors quoting a NAT'd flow --------------------------------- */

struct icmp6_quote {
	struct ct6_key inner;	     /* the quoted flow, as quoted */
	__u32	       end;	     /* end of the outer IPv6 packet in the frame */
	__u32	       icmp_off;     /* ICMPv6 header */
	__u32	       inner_ip_off; /* quoted IPv6 header */
	__u32	       inner_l4_off; /* quoted L4 header */
};

static __always_inline int icmp6_is_error(__u8 type)
{
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED || type == ICMPV6_PARAMPROB;
}

/* Read the flow an ICMPv6 error quotes: 0, 1 (not one we translate: a
 * quote of something else than TCP/UDP/SCTP right after the fixed header,
 * or cut short) or -1 (malformed). */
static __always_inline int icmp6_err_parse(struct __sk_buff *skb, const struct pkt6 *p,
					   struct icmp6_quote *e)
{
	struct ipv6hdr_ iip;
	__be16		ports[2];

	if (!icmp6_is_error(p->icmp_type))
		return 1;
	e->icmp_off	= p->l4_off;
	e->end		= ETH_HLEN + p->l3_len;
	e->inner_ip_off = p->l4_off + 8;
	e->inner_l4_off = e->inner_ip_off + IPV6_HLEN;
	if (e->inner_l4_off + 4 > e->end)
		return 1;
	if (bpf_skb_load_bytes(skb, e->inner_ip_off, &iip, sizeof(iip)))
		return -1;
	if ((iip.vtc >> 4) != 6)
		return -1;
	if (iip.nexthdr != IPPROTO_TCP && iip.nexthdr != IPPROTO_UDP && iip.nexthdr != IPPROTO_SCTP)
		return 1;
	if (bpf_skb_load_bytes(skb, e->inner_l4_off, ports, sizeof(ports)))
		return -1;
	e->inner.saddr	= iip.saddr;
	e->inner.daddr	= iip.daddr;
	e->inner.sport	= ports[0];
	e->inner.dport	= ports[1];
	e->inner.proto	= iip.nexthdr;
	e->inner.pad[0] = e->inner.pad[1] = e->inner.pad[2] = 0;
	return 0;
}

/* Change a 2-byte field of the ICMPv6 payload, ICMPv6 checksum kept. */
static __always_inline int icmp6_store2(struct __sk_buff *skb, const struct icmp6_quote *e,
					__u32 off, __be16 from, __be16 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, e->icmp_off + 2, from, to, sizeof(to)))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

/* Change a 16-byte address of the ICMPv6 payload, ICMPv6 checksum kept. */
static __always_inline int icmp6_store16(struct __sk_buff *skb, const struct icmp6_quote *e,
					 __u32 off, const union v6addr *from,
					 const union v6addr *to)
{
	__s64 diff;

	if (v6_eq(from, to))
		return 0;
	diff = bpf_csum_diff((__be32 *)from->w, sizeof(*from), (__be32 *)to->w, sizeof(*to), 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, e->icmp_off + 2, 0, (__u32)diff, 0))
		return -1;
	return bpf_skb_store_bytes(skb, off, to, sizeof(*to), 0);
}

static __always_inline __u16 csum_replace16(__u16 csum, const union v6addr *from,
					    const union v6addr *to)
{
	csum = csum_replace4(csum, from->w[0], to->w[0]);
	csum = csum_replace4(csum, from->w[1], to->w[1]);
	csum = csum_replace4(csum, from->w[2], to->w[2]);
	return csum_replace4(csum, from->w[3], to->w[3]);
}

/* Rewrite the quoted flow to 'to', keeping the quoted L4 checksum (when it
 * was quoted) and the ICMPv6 checksum right. A quoted SCTP CRC32c covers
 * bytes the quote may not hold: it stays as the sender wrote it (the
 * receiver of the error matches ports and verification tag, never the
 * quoted CRC), as for IPv4 (lib/nat.h). */
static __always_inline int icmp6_err_rewrite_inner(struct __sk_buff	    *skb,
						   const struct icmp6_quote *e,
						   const struct ct6_key	    *to)
{
	__u32 il4_csum_off =
		e->inner_l4_off + (e->inner.proto == IPPROTO_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF);
	__u16 l4c, nl4c;

	if (e->inner.proto != IPPROTO_SCTP && il4_csum_off + sizeof(l4c) <= e->end &&
	    bpf_skb_load_bytes(skb, il4_csum_off, &l4c, sizeof(l4c)) == 0) {
		nl4c = csum_replace16(l4c, &e->inner.saddr, &to->saddr);
		nl4c = csum_replace16(nl4c, &e->inner.daddr, &to->daddr);
		nl4c = csum_replace2(nl4c, e->inner.sport, to->sport);
		nl4c = csum_replace2(nl4c, e->inner.dport, to->dport);
		if (e->inner.proto == IPPROTO_UDP && nl4c == 0)
			nl4c = 0xffff;
		if (icmp6_store2(skb, e, il4_csum_off, l4c, nl4c))
			return -1;
	}
	if (icmp6_store16(skb, e, e->inner_ip_off + 8, &e->inner.saddr, &to->saddr) ||
	    icmp6_store16(skb, e, e->inner_ip_off + 24, &e->inner.daddr, &to->daddr) ||
	    icmp6_store2(skb, e, e->inner_l4_off, e->inner.sport, to->sport) ||
	    icmp6_store2(skb, e, e->inner_l4_off + 2, e->inner.dport, to->dport))
		return -1;
	return 0;
}

#endif /* BPFPROXY_NAT6_H */
