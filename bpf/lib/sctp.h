/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * SCTP (RFC 9260) for the service datapath: the common header, what the
 * first chunk means for conntrack, and the port rewrite with its CRC32c.
 *
 * Conntrack: an association is a flow keyed by addresses and ports, with
 * the TCP states and timeouts (lib/conntrack.h, lib/conntrack6.h).
 * parse_ipv4() and parse_ipv6() read the first chunk's type and hand it on
 * as the TCP flags that play its part:
 *   INIT (vtag 0)                  -> SYN      opens a flow, as a SYN does
 *   INIT ACK                       -> SYN|ACK  the reply: REPLY_SEEN
 *   ABORT, SHUTDOWN COMPLETE       -> RST      rst-seen timeout
 *   SHUTDOWN, SHUTDOWN ACK         -> FIN|ACK  fins-seen once both ways
 *   anything else (COOKIE ECHO...) -> ACK      after a reply: established
 * so a forged INIT that a backend answers ages out in the SYN-sent time,
 * and a packet of an association we do not know (after a restart, or one
 * kube-proxy's rules carried) is left to the kernel instead of being sent
 * to a new endpoint. Only the first chunk is read: a SHUTDOWN or ABORT
 * bundled behind DATA leaves the flow established until its timeout.
 *
 * CRC32c: the checksum covers the SCTP packet only, no pseudo header, so an
 * address rewrite leaves it valid and only a port rewrite changes it. The
 * CRC is linear over GF(2): two packets of the same length L that differ by
 * D have CRCs that differ by the CRC register run over D alone (from 0, no
 * final XOR). With D = the 4 port bytes then L - 4 zero bytes, that is
 * w(x) * x^(8L) mod P (w: the XOR of the old and new port bytes). That
 * is at most 16 multiplications in GF(2)[x]/P by the
 * table below (x^(8 * 2^k) mod P), whatever L is: no loop over the packet,
 * no packet too long to fix, no helper needed (6.18 has no CRC32c helper or
 * kfunc for TC programs; bpf_csum_diff is the Internet checksum). A packet
 * that arrived with a wrong CRC keeps a wrong CRC: the receiver still
 * drops it, we never launder it. Where the CRC is still to be computed
 * (CHECKSUM_PARTIAL from a local SCTP socket, GSO), the stack writes it
 * over ours afterwards.
 */
#ifndef BPFPROXY_SCTP_H
#define BPFPROXY_SCTP_H

#include "common.h"

/* Common header and the first chunk's header: what parse_ipv4() and
 * parse_ipv6() need. */
struct sctp_first {
	__be16 source;
	__be16 dest;
	__be32 vtag;
	__u32  checksum; /* CRC32c, little-endian on the wire */
	__u8   chunk_type;
	__u8   chunk_flags;
	__be16 chunk_len;
};

#define SCTP_HDR_LEN	   12
#define SCTP_CSUM_OFF	   8
#define SCTP_CID_INIT	   1
#define SCTP_CID_INIT_ACK  2
#define SCTP_CID_ABORT	   6
#define SCTP_CID_SHUTDOWN  7
#define SCTP_CID_SHUT_ACK  8
#define SCTP_CID_SHUT_DONE 14

/* The TCP flags that stand for the first chunk in conntrack (see above).
 * An INIT with a non-zero verification tag is invalid (RFC 9260 8.5.1)
 * and opens nothing. */
static __always_inline __u8 sctp_ct_flags(__u8 chunk_type, __be32 vtag)
{
	switch (chunk_type) {
	case SCTP_CID_INIT:
		return vtag ? TCP_FLAG_ACK : TCP_FLAG_SYN;
	case SCTP_CID_INIT_ACK:
		return TCP_FLAG_SYN | TCP_FLAG_ACK;
	case SCTP_CID_ABORT:
	case SCTP_CID_SHUT_DONE:
		return TCP_FLAG_RST;
	case SCTP_CID_SHUTDOWN:
	case SCTP_CID_SHUT_ACK:
		return TCP_FLAG_FIN | TCP_FLAG_ACK;
	default:
		return TCP_FLAG_ACK;
	}
}

/* CRC32c (Castagnoli), bit-reflected: x^0 is bit 31. */
#define CRC32C_POLY 0x82f63b78U

/* x^(8 * 2^k) mod P for k = 0..15 (x^8, x^16, x^32, ...): shifting a
 * register over 2^k zero bytes. test/sctp.test.ts derives them again. */
static const __u32 crc32c_zeros[16] = {
	0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18, 0x510ac59a,
	0xb82be955, 0xb8fdb1e7, 0x88e56f72, 0x74c360a4, 0xe4172b16, 0x0d65762a,
	0x35d73a62, 0x28461564, 0xbf455269, 0xe2ea32dc,
};

/* a(x) * b(x) mod P, branch-free so the verifier walks one path. */
static __always_inline __u32 crc32c_mulmod(__u32 a, __u32 b)
{
	__u32 p = 0;
	int   i;

	for (i = 0; i < 32; i++) {
		p ^= b & -((a >> (31 - i)) & 1);
		b = (b >> 1) ^ (CRC32C_POLY & -(b & 1));
	}
	return p;
}

/* What the CRC32c of an SCTP packet of 'len' bytes changes by when its
 * first 4 bytes change by 'w' (the XOR of old and new, as a little-endian
 * word): w * x^(8 len) mod P. A global function: the verifier checks it
 * once, on its own, not again on every path that rewrites a packet. */
__noinline __u32 sctp_crc_delta(__u32 w, __u32 len)
{
	int k;

	for (k = 0; k < 16; k++) {
		if (len & (1U << k))
			w = crc32c_mulmod(crc32c_zeros[k], w);
	}
	return w;
}

/* The 2 bytes of a port as the low half of a little-endian word of the
 * packet's first 4 bytes, on any host. */
static __always_inline __u32 sctp_le_half(__be16 port)
{
	__u16 h = bpf_ntohs(port);

	return (__u32)((h >> 8) | ((h & 0xff) << 8));
}

/* Rewrite the ports of the SCTP packet at l4_off (len bytes long) from
 * (sport, dport) to (nsport, ndport) and fold the change into its CRC32c.
 * Returns 0 or -1. */
static __always_inline int sctp_rewrite_ports(struct __sk_buff *skb, __u32 l4_off, __u32 len,
					      __be16 sport, __be16 dport, __be16 nsport,
					      __be16 ndport)
{
	__be16 ports[2] = {nsport, ndport};
	__u8   c[4];
	__u32  w, crc;

	if (sport == nsport && dport == ndport)
		return 0;
	w = (sctp_le_half(sport) ^ sctp_le_half(nsport)) |
	    ((sctp_le_half(dport) ^ sctp_le_half(ndport)) << 16);
	if (bpf_skb_load_bytes(skb, l4_off + SCTP_CSUM_OFF, c, sizeof(c)))
		return -1;
	crc = (__u32)c[0] | ((__u32)c[1] << 8) | ((__u32)c[2] << 16) | ((__u32)c[3] << 24);
	crc ^= sctp_crc_delta(w, len);
	c[0] = crc;
	c[1] = crc >> 8;
	c[2] = crc >> 16;
	c[3] = crc >> 24;
	/* The Internet sum of the bytes changes (nothing compensates it, as a
	 * TCP checksum would): keep a CHECKSUM_COMPLETE skb's sum right. */
	if (bpf_skb_store_bytes(skb, l4_off, ports, sizeof(ports), BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, l4_off + SCTP_CSUM_OFF, c, sizeof(c), BPF_F_RECOMPUTE_CSUM))
		return -1;
	return 0;
}

#endif /* BPFPROXY_SCTP_H */
