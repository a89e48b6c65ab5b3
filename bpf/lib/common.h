/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, constants and tiny helpers every program needs. */
#ifndef BPFPROXY_COMMON_H
#define BPFPROXY_COMMON_H

#include "include/uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"

/* Not uapi: include/net/ip.h and include/linux/socket.h. */
#define IP_DF	  0x4000
#define IP_MF	  0x2000
#define IP_OFFSET 0x1FFF
#define AF_INET	  2

/* TCP flags as the byte at offset 13 of the header carries them. */
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_PSH 0x08
#define TCP_FLAG_ACK 0x10

/* Offsets inside an Ethernet + IPv4 frame. */
#define IP_OFF	     ETH_HLEN
#define IP_CSUM_OFF  (IP_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF   (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF   (IP_OFF + offsetof(struct iphdr, daddr))
#define TCP_CSUM_OFF offsetof(struct tcphdr, check)
#define UDP_CSUM_OFF offsetof(struct udphdr, check)

#ifndef offsetof
#define offsetof(t, m) __builtin_offsetof(t, m)
#endif

#define NSEC_PER_SEC 1000000000ULL

/* Fold a 32-bit one's complement sum to 16 bits and invert. */
static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Incremental update of a 16-bit Internet checksum (RFC 1624) when a 32-bit
 * word in the covered data changes from 'from' to 'to'. */
static __always_inline __u16 csum_replace4(__u16 csum, __be32 from, __be32 to)
{
	__u32 sum = (__u16)~csum;
	sum += (__u16) ~(from & 0xffff) + (__u16) ~(from >> 16);
	sum += (to & 0xffff) + (to >> 16);
	return csum_fold32(sum);
}

static __always_inline __u16 csum_replace2(__u16 csum, __be16 from, __be16 to)
{
	__u32 sum = (__u16)~csum;
	sum += (__u16)~from;
	sum += to;
	return csum_fold32(sum);
}

#endif /* BPFPROXY_COMMON_H */
