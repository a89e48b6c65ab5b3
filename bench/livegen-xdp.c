// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The XDP program of bench/livegen.c. livegen runs it with BPF_PROG_RUN in
 * live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES): every run is one frame,
 * and XDP_TX sends it out of the interface livegen names (the kernel turns
 * a live-frames XDP_TX into a redirect to that interface).
 *
 * The kernel copies the frame into a page once and recycles the page
 * afterwards without resetting its bytes, and whatever received the frame
 * before (an XDP or TC program doing NAT) may have rewritten them. So every
 * run writes the whole header template back, then the flow's source address
 * and port with both checksums updated incrementally (RFC 1624) from the
 * template's. A per-CPU counter numbers the frames: frame n is flow n.
 */
#include "include/uapi.h"
#include <bpf/bpf_helpers.h>
#include "../bench/livegen.h"

const volatile struct livegen_cfg cfg;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} livegen_frames SEC(".maps");

static __always_inline __u32 add16(__u32 sum, __u32 old, __u32 new)
{
	return sum + (~old & 0xffff) + (new & 0xffff);
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline void put16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

SEC("xdp")
int livegen(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u32 zero = 0, n, srcs, src, sport, ip_csum, l4_csum;
	__u64 *count;
	__u32 off;

	if (data + LIVEGEN_MIN_FRAME > end)
		return XDP_ABORTED;
	count = bpf_map_lookup_elem(&livegen_frames, &zero);
	if (!count)
		return XDP_ABORTED;
	n = (__u32)*count;
	*count += 1;

#pragma unroll
	for (int i = 0; i < LIVEGEN_TPL_WORDS; i++)
		((__u64 *)data)[i] = cfg.tpl[i];

	srcs = cfg.srcs ? cfg.srcs : 1;
	if (srcs == 1 && cfg.sports <= 1)
		return XDP_TX;
	src = cfg.src + n % srcs;
	sport = (cfg.sport + (n / srcs) % (cfg.sports ? cfg.sports : 1)) & 0xffff;

	/* IPv4 header checksum: the source address changed */
	ip_csum = ~cfg.ip_csum & 0xffff;
	ip_csum = add16(ip_csum, cfg.src >> 16, src >> 16);
	ip_csum = add16(ip_csum, cfg.src & 0xffff, src & 0xffff);
	put16(data + 24, ~fold(ip_csum));
	put16(data + 26, src >> 16);
	put16(data + 28, src & 0xffff);
	put16(data + 34, sport);

	/* L4 checksum: the pseudo header's source address and the source port */
	off = cfg.l4_csum_off;
	if (off != 40 && off != 50)
		return XDP_ABORTED;
	if (cfg.udp && cfg.l4_csum == 0)
		return XDP_TX; /* UDP without checksum stays without */
	l4_csum = ~cfg.l4_csum & 0xffff;
	l4_csum = add16(l4_csum, cfg.src >> 16, src >> 16);
	l4_csum = add16(l4_csum, cfg.src & 0xffff, src & 0xffff);
	l4_csum = add16(l4_csum, cfg.sport, sport);
	l4_csum = ~fold(l4_csum) & 0xffff;
	if (cfg.udp && l4_csum == 0)
		l4_csum = 0xffff;
	if (off == 40)
		put16(data + 40, l4_csum);
	else
		put16(data + 50, l4_csum);
	return XDP_TX;
}

char _license[] SEC("license") = "Dual BSD/GPL";
