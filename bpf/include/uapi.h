/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The part of the kernel's user-space ABI the programs use, vendored, so
 * that the object builds on any host: no /sys/kernel/btf/vmlinux dump of the
 * build host, no uapi headers of a particular version (linux-libc-dev follows
 * its distribution's kernel, and the programs pass flags newer than some).
 *
 * Everything here is stable uapi: layouts never change, fields are only
 * appended. Copied from include/uapi/linux/ bpf.h, if_ether.h, in.h, ip.h,
 * tcp.h, udp.h, icmp.h, pkt_cls.h and asm-generic/errno-base.h, cut down to
 * what bpf/ reads (__sk_buff and xdp_md end after their last field read; reserved
 * bitfields are named __*). test/uapi-header.test.ts checks every constant
 * and every field here against the kernel's uapi headers.
 *
 * No CO-RE: no preserve_access_index, so no relocation asks the kernel for
 * its BTF at load time; these are uapi structs whose offsets the kernel
 * guarantees, and nothing here is a kernel-internal type.
 */
#ifndef BPFPROXY_UAPI_H
#define BPFPROXY_UAPI_H

/* ---- asm-generic/int-ll64.h, linux/types.h ------------------------------ */

typedef signed char	   __s8;
typedef unsigned char	   __u8;
typedef signed short	   __s16;
typedef unsigned short	   __u16;
typedef signed int	   __s32;
typedef unsigned int	   __u32;
typedef signed long long   __s64;
typedef unsigned long long __u64;

typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u16 __sum16;
typedef __u32 __wsum;

/* ---- asm-generic/errno-base.h ------------------------------------------- */

#define E2BIG 7

/* ---- linux/if_ether.h --------------------------------------------------- */

#define ETH_ALEN 6
#define ETH_HLEN 14
#define ETH_P_IP 0x0800

/* uapi marks it packed; the natural layout is the same (14 bytes, h_proto
 * at 12), and like a BTF dump of the kernel's types it is left unpacked. */
struct ethhdr {
	unsigned char h_dest[ETH_ALEN];
	unsigned char h_source[ETH_ALEN];
	__be16	      h_proto;
};

/* ---- linux/in.h --------------------------------------------------------- */

enum {
	IPPROTO_ICMP = 1,
	IPPROTO_TCP  = 6,
	IPPROTO_UDP  = 17,
	IPPROTO_SCTP = 132,
};

/* ---- linux/ip.h --------------------------------------------------------- */

struct iphdr {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u8 ihl : 4, version : 4;
#else
	__u8  version : 4, ihl : 4;
#endif
	__u8	tos;
	__be16	tot_len;
	__be16	id;
	__be16	frag_off;
	__u8	ttl;
	__u8	protocol;
	__sum16 check;
	__be32	saddr;
	__be32	daddr;
	/* options follow */
};

/* ---- linux/tcp.h -------------------------------------------------------- */

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u16 __res1 : 4, /* res1:4, or ae:1 + res1:3 since 6.2 */
		doff : 4, fin : 1, syn : 1, rst : 1, psh : 1, ack : 1, urg : 1, ece : 1, cwr : 1;
#else
	__u16 doff : 4, __res1 : 4, cwr : 1, ece : 1, urg : 1, ack : 1, psh : 1, rst : 1, syn : 1,
		fin : 1;
#endif
	__be16	window;
	__sum16 check;
	__be16	urg_ptr;
};

/* ---- linux/udp.h -------------------------------------------------------- */

struct udphdr {
	__be16	source;
	__be16	dest;
	__be16	len;
	__sum16 check;
};

/* ---- linux/icmp.h ------------------------------------------------------- */

#define ICMP_ECHOREPLY	   0
#define ICMP_DEST_UNREACH  3
#define ICMP_ECHO	   8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

/* codes for ICMP_DEST_UNREACH */
#define ICMP_PORT_UNREACH 3
#define ICMP_FRAG_NEEDED  4

struct icmphdr {
	__u8	type;
	__u8	code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		__be32 gateway;
		struct {
			__be16 __unused;
			__be16 mtu;
		} frag;
		__u8 reserved[4];
	} un;
};

/* ---- linux/pkt_cls.h ---------------------------------------------------- */

#define TC_ACT_UNSPEC	(-1)
#define TC_ACT_OK	0
#define TC_ACT_SHOT	2
#define TC_ACT_REDIRECT 7

/* ---- linux/bpf.h -------------------------------------------------------- */

enum bpf_map_type {
	BPF_MAP_TYPE_UNSPEC	   = 0,
	BPF_MAP_TYPE_HASH	   = 1,
	BPF_MAP_TYPE_ARRAY	   = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY  = 6,
	BPF_MAP_TYPE_LRU_HASH	   = 9,
	BPF_MAP_TYPE_LPM_TRIE	   = 11,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_HASH_OF_MAPS  = 13,
	BPF_MAP_TYPE_XSKMAP	   = 17,
	BPF_MAP_TYPE_RINGBUF	   = 27,
};

/* flags for BPF_MAP_UPDATE_ELEM / bpf_map_update_elem() */
enum {
	BPF_ANY	    = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST   = 2,
};

/* map_flags at creation */
enum {
	BPF_F_NO_PREALLOC = (1U << 0),
	BPF_F_MMAPABLE	  = (1U << 10),
};

/* bpf_skb_store_bytes() */
enum {
	BPF_F_RECOMPUTE_CSUM = (1ULL << 0),
};

/* bpf_l3_csum_replace() / bpf_l4_csum_replace(): the low 4 bits carry the
 * size of the field */
enum {
	BPF_F_PSEUDO_HDR     = (1ULL << 4),
	BPF_F_MARK_MANGLED_0 = (1ULL << 5),
};

/* bpf_skb_adjust_room() modes */
enum bpf_adj_room_mode {
	BPF_ADJ_ROOM_NET = 0,
	BPF_ADJ_ROOM_MAC = 1,
};

/* bpf_fib_lookup() flags */
enum {
	BPF_FIB_LOOKUP_DIRECT	  = (1U << 0),
	BPF_FIB_LOOKUP_OUTPUT	  = (1U << 1),
	BPF_FIB_LOOKUP_SKIP_NEIGH = (1U << 2),
	BPF_FIB_LOOKUP_TBID	  = (1U << 3),
	BPF_FIB_LOOKUP_SRC	  = (1U << 4),
};

/* bpf_fib_lookup() results (>= 0; < 0 is an error in the arguments) */
enum {
	BPF_FIB_LKUP_RET_SUCCESS      = 0,
	BPF_FIB_LKUP_RET_BLACKHOLE    = 1,
	BPF_FIB_LKUP_RET_UNREACHABLE  = 2,
	BPF_FIB_LKUP_RET_PROHIBIT     = 3,
	BPF_FIB_LKUP_RET_NOT_FWDED    = 4,
	BPF_FIB_LKUP_RET_FWD_DISABLED = 5,
	BPF_FIB_LKUP_RET_UNSUPP_LWT   = 6,
	BPF_FIB_LKUP_RET_NO_NEIGH     = 7,
	BPF_FIB_LKUP_RET_FRAG_NEEDED  = 8,
	BPF_FIB_LKUP_RET_NO_SRC_ADDR  = 9,
};

#define __bpf_md_ptr(type, name)                                                                   \
	union {                                                                                    \
		type name;                                                                         \
		__u64 : 64;                                                                        \
	} __attribute__((aligned(8)))

struct bpf_flow_keys;
struct bpf_sock;

/* The TC program context, up to gso_size (the last field read). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	__bpf_md_ptr(struct bpf_flow_keys *, flow_keys);
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	__bpf_md_ptr(struct bpf_sock *, sk);
	__u32 gso_size;
};

/* The context of cgroup sock_addr programs (connect, sendmsg, recvmsg,
 * getpeername), whole. */
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;
	__u32 user_ip6[4];
	__u32 user_port;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	__bpf_md_ptr(struct bpf_sock *, sk);
};

/* XDP program verdicts */
enum xdp_action {
	XDP_ABORTED  = 0,
	XDP_DROP     = 1,
	XDP_PASS     = 2,
	XDP_TX	     = 3,
	XDP_REDIRECT = 4,
};

/* The XDP program context, up to rx_queue_index (the last field read). */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
};

struct bpf_fib_lookup {
	/* input: AF_INET or AF_INET6 */
	__u8 family;
	/* input: L4 protocol and ports, for ECMP hashing */
	__u8   l4_protocol;
	__be16 sport;
	__be16 dport;
	union {
		/* input: length of the packet the route must carry (MTU check) */
		__u16 tot_len;
		/* output: the MTU, with BPF_FIB_LKUP_RET_FRAG_NEEDED */
		__u16 mtu_result;
	};
	/* input: the device the lookup is made for; output: egress device */
	__u32 ifindex;
	union {
		__u8   tos;
		__be32 flowinfo;
		__u32  rt_metric;
	};
	union {
		__be32 ipv4_src;
		__u32  ipv6_src[4];
	};
	union {
		__be32 ipv4_dst;
		__u32  ipv6_dst[4];
	};
	union {
		struct {
			__be16 h_vlan_proto;
			__be16 h_vlan_TCI;
		};
		__u32 tbid;
	};
	/* output (6.10 overlays an input mark on them, not used here) */
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
};

#endif /* BPFPROXY_UAPI_H */
