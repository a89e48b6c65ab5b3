/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Answers built from the packet itself, rewritten in place and sent back out
 * of the interface it came in on: rejects for services without endpoints
 * (TCP RST, ICMP port unreachable, as kube-proxy's REJECT rule) and ICMP
 * fragmentation-needed when the next hop's MTU is too small.
 */
#ifndef BPFPROXY_REJECT_H
#define BPFPROXY_REJECT_H

#include "common.h"
#include "drop.h"
#include "parse.h"

struct pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8   zero;
	__u8   proto;
	__be16 len;
};

static __always_inline void reject_ip(struct iphdr *ip, const struct pkt *p, __u8 proto, __u16 len)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version  = 4;
	ip->ihl	     = 5;
	ip->tot_len  = bpf_htons(len);
	ip->ttl	     = 64;
	ip->protocol = proto;
	ip->saddr    = p->tuple.daddr;
	ip->daddr    = p->tuple.saddr;
	ip->check    = csum_fold32(bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0));
}

/* Write the answer's headers (Ethernet, IPv4, then 'l4len' bytes of L4)
 * over the start of the reshaped frame, one by one (Ethernet is 14 bytes, so
 * a struct of all three has a hole), and send it back where it came from. */
static __always_inline int reply_send(struct __sk_buff *skb, const struct ethhdr *eth,
				      const struct iphdr *ip, const void *l4, __u32 l4len,
				      enum reason r)
{
	if (bpf_skb_store_bytes(skb, 0, eth, ETH_HLEN, 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF, ip, sizeof(*ip), 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF + sizeof(*ip), l4, l4len, 0))
		return drop(skb, REASON_REJECT_FAILED);
	count_reason(skb, r);
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int reject_tcp(struct __sk_buff *skb, const struct pkt *p)
{
	struct {
		struct ethhdr eth;
		struct iphdr  ip;
		struct tcphdr tcp;
	} out; /* stored part by part: see reply_send() */
	struct ethhdr	  ieth;
	struct iphdr	  iip;
	struct tcphdr	  ith;
	struct pseudo_hdr ph;
	__u32		  payload, sum;

	if (bpf_skb_load_bytes(skb, 0, &ieth, sizeof(ieth)) ||
	    bpf_skb_load_bytes(skb, IP_OFF, &iip, sizeof(iip)) ||
	    bpf_skb_load_bytes(skb, p->l4_off, &ith, sizeof(ith)))
		return drop(skb, REASON_REJECT_FAILED);
	if (ith.rst) /* never answer a RST */
		return drop(skb, REASON_NO_ENDPOINTS);
	payload = bpf_ntohs(iip.tot_len) - p->ihl_bytes - ith.doff * 4;

	__builtin_memcpy(out.eth.h_dest, ieth.h_source, ETH_ALEN);
	__builtin_memcpy(out.eth.h_source, ieth.h_dest, ETH_ALEN);
	out.eth.h_proto = bpf_htons(ETH_P_IP);
	reject_ip(&out.ip, p, IPPROTO_TCP, sizeof(out.ip) + sizeof(out.tcp));

	__builtin_memset(&out.tcp, 0, sizeof(out.tcp));
	out.tcp.source = ith.dest;
	out.tcp.dest   = ith.source;
	out.tcp.doff   = 5;
	out.tcp.rst    = 1;
	if (ith.ack) {
		out.tcp.seq = ith.ack_seq;
	} else {
		out.tcp.ack	= 1;
		out.tcp.ack_seq = bpf_htonl(bpf_ntohl(ith.seq) + payload + ith.syn + ith.fin);
	}
	ph.saddr      = out.ip.saddr;
	ph.daddr      = out.ip.daddr;
	ph.zero	      = 0;
	ph.proto      = IPPROTO_TCP;
	ph.len	      = bpf_htons(sizeof(out.tcp));
	sum	      = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum	      = bpf_csum_diff(NULL, 0, (__be32 *)&out.tcp, sizeof(out.tcp), sum);
	out.tcp.check = csum_fold32(sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(out.ip) + sizeof(out.tcp), 0))
		return drop(skb, REASON_REJECT_FAILED);
	return reply_send(skb, &out.eth, &out.ip, &out.tcp, sizeof(out.tcp), REASON_NO_ENDPOINTS);
}

/* Quoted bytes: the whole IP header (options included) and the first 8
 * bytes of what follows (RFC 792), or the whole TCP or SCTP common header:
 * a CHECKSUM_PARTIAL skb (from a local socket or a veth) cannot be trimmed
 * short of its L4 checksum field. */
#define ICMP_QUOTE_L4_MIN 8
#define ICMP_QUOTE_BUF	  (60 + sizeof(struct tcphdr))

static __always_inline __u32 reject_quote_l4(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return sizeof(struct tcphdr);
	if (proto == IPPROTO_SCTP)
		return SCTP_HDR_LEN;
	return ICMP_QUOTE_L4_MIN;
}

/* Answer the packet with an ICMP error (type/code, and the next-hop MTU for
 * fragmentation needed) quoting its IP header and first bytes, sent back
 * out of the interface it came in on. 'r' is the reason it is counted under. */
static __always_inline int icmp_reply(struct __sk_buff *skb, const struct pkt *p, __u8 type,
				      __u8 code, __u16 mtu, enum reason r)
{
	struct {
		struct ethhdr  eth;
		struct iphdr   ip;
		struct icmphdr icmp;
	} out;
	struct ethhdr ieth;
	__u8	      quote[ICMP_QUOTE_BUF];
	__u32	      qlen = p->ihl_bytes + reject_quote_l4(p->tuple.proto);
	__u32	      sum;

	/* ihl_bytes is 20..60 and a multiple of 4; say so to the verifier. */
	qlen &= 0x7c;
	if (qlen < sizeof(struct iphdr) + ICMP_QUOTE_L4_MIN || qlen > sizeof(quote))
		return drop(skb, REASON_REJECT_FAILED);
	if (bpf_skb_load_bytes(skb, 0, &ieth, sizeof(ieth)) ||
	    bpf_skb_load_bytes(skb, IP_OFF, quote, qlen))
		return drop(skb, REASON_REJECT_FAILED);

	__builtin_memcpy(out.eth.h_dest, ieth.h_source, ETH_ALEN);
	__builtin_memcpy(out.eth.h_source, ieth.h_dest, ETH_ALEN);
	out.eth.h_proto = bpf_htons(ETH_P_IP);
	reject_ip(&out.ip, p, IPPROTO_ICMP, sizeof(out.ip) + sizeof(out.icmp) + qlen);
	__builtin_memset(&out.icmp, 0, sizeof(out.icmp));
	out.icmp.type	     = type;
	out.icmp.code	     = code;
	out.icmp.un.frag.mtu = bpf_htons(mtu);
	sum		     = bpf_csum_diff(NULL, 0, (__be32 *)&out.icmp, sizeof(out.icmp), 0);
	sum		     = bpf_csum_diff(NULL, 0, (__be32 *)quote, qlen, sum);
	out.icmp.checksum    = csum_fold32(sum);

	/* Keep Ethernet + the quoted bytes, then open room for IP + ICMP. */
	if (bpf_skb_change_tail(skb, ETH_HLEN + qlen, 0) ||
	    bpf_skb_adjust_room(skb, sizeof(out.ip) + sizeof(out.icmp), BPF_ADJ_ROOM_MAC, 0))
		return drop(skb, REASON_REJECT_FAILED);
	return reply_send(skb, &out.eth, &out.ip, &out.icmp, sizeof(out.icmp), r);
}

static __always_inline int reject(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->tuple.proto == IPPROTO_TCP)
		return reject_tcp(skb, p);
	return icmp_reply(skb, p, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0, REASON_NO_ENDPOINTS);
}

#endif /* BPFPROXY_REJECT_H */
