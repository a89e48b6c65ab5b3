/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared by bench/livegen.c (user space) and bench/livegen-xdp.c (its XDP
 * program): the configuration livegen writes into the program's .rodata
 * before loading it. */
#ifndef BENCH_LIVEGEN_H
#define BENCH_LIVEGEN_H

/* Bytes of the template rewritten into every frame: Ethernet (14) + IPv4
 * (20) + TCP (20) headers, rounded up to 8. Frames are at least 60 bytes. */
#define LIVEGEN_TPL_WORDS 7
#define LIVEGEN_MIN_FRAME 60

struct livegen_cfg {
	/* the frame's first LIVEGEN_TPL_WORDS * 8 bytes, as sent for flow 0 */
	__u64 tpl[LIVEGEN_TPL_WORDS];
	/* flow 0's IPv4 source (host order), source port, IPv4 header checksum
	 * and L4 checksum (host order) */
	__u32 src;
	__u32 sport;
	__u32 ip_csum;
	__u32 l4_csum;
	/* offset of the L4 checksum in the frame: 40 (UDP) or 50 (TCP) */
	__u32 l4_csum_off;
	/* 1: UDP (a 0 result is sent as 0xffff; a template without checksum
	 * stays without) */
	__u32 udp;
	/* frame n is flow n: source address src + n % srcs, source port
	 * sport + (n / srcs) % sports */
	__u32 srcs;
	__u32 sports;
};

#endif
