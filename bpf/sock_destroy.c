// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level LB, the other half of a backend's removal: connected UDP
 * sockets that reached a backend through a service are destroyed when the
 * agent removes that backend (the application sees ECONNABORTED and
 * connects again, to a backend that is still there). Without it a
 * connected UDP socket keeps sending to the backend it connected to.
 *
 * A separate object: it needs kernel 6.5 (bpf_sock_destroy kfunc, a UDP
 * socket iterator program) and the kernel's BTF (CO-RE relocations on
 * struct sock_common), which the main object does without. Where it does
 * not load, the agent says so once and carries on.
 *
 * The agent fills bpfproxy_sock_dead with the removed backends, then runs
 * this iterator in each network namespace whose sockets the socket LB
 * serves; one byte is written per socket destroyed (the count).
 */
#include "include/uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/types.h"
#include "lib/types6.h"

#define IPPROTO_UDP_ 17
#define AF_INET_     2
#define AF_INET6_    10

/* The kernel's types, only the fields read, matched by name at load time. */
struct in6_addr {
	union {
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32		skc_daddr;
	__be16		skc_dport;
	unsigned short	skc_family;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct bpf_iter_meta {
	void *seq;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock	     *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct sock_rev_key);
	__type(value, struct sock_rev_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_sock_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct sock_rev6_key);
	__type(value, struct sock_rev6_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_sock_rev6 SEC(".maps");

/* The backends just removed (key: address, port, IPPROTO_UDP). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fe_key);
	__type(value, __u8);
} bpfproxy_sock_dead SEC(".maps");

/* The IPv6 ones. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fe6_key);
	__type(value, __u8);
} bpfproxy_sock_dead6 SEC(".maps");

/* A native IPv6 socket's peer (not v4-mapped, not ::) the socket LB sent it
 * to through a removed backend: its reverse entry deleted, 1. */
static __always_inline int sock_dead6(struct sock_common *sk)
{
	struct fe6_key	     dk = {.proto = IPPROTO_UDP_};
	struct sock_rev6_key rk = {.proto = IPPROTO_UDP_};

	dk.addr.w[0] = sk->skc_v6_daddr.in6_u.u6_addr32[0];
	dk.addr.w[1] = sk->skc_v6_daddr.in6_u.u6_addr32[1];
	dk.addr.w[2] = sk->skc_v6_daddr.in6_u.u6_addr32[2];
	dk.addr.w[3] = sk->skc_v6_daddr.in6_u.u6_addr32[3];
	dk.port	     = sk->skc_dport;
	if (!dk.port || !bpf_map_lookup_elem(&bpfproxy_sock_dead6, &dk))
		return 0;
	rk.cookie = bpf_get_socket_cookie(sk);
	rk.addr	  = dk.addr;
	rk.port	  = dk.port;
	if (!bpf_map_lookup_elem(&bpfproxy_sock_rev6, &rk))
		return 0;
	bpf_map_delete_elem(&bpfproxy_sock_rev6, &rk);
	return 1;
}

/* An IPv6 socket whose peer is not v4-mapped (its skc_daddr is then no
 * address of the peer's). */
static __always_inline int sk_v6_native(struct sock_common *sk)
{
	return !(sk->skc_v6_daddr.in6_u.u6_addr32[0] == 0 &&
		 sk->skc_v6_daddr.in6_u.u6_addr32[1] == 0 &&
		 sk->skc_v6_daddr.in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff));
}

SEC("iter/udp")
int bpfproxy_sock_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct sock_common *sk	= (struct sock_common *)ctx->udp_sk;
	struct fe_key	    dk	= {.proto = IPPROTO_UDP_};
	__u8		    one = 1;

	if (!sk)
		return 0;
	if (sk->skc_family == AF_INET6_ && sk_v6_native(sk)) {
		if (sock_dead6(sk) && bpf_sock_destroy(sk) == 0)
			bpf_seq_write(ctx->meta->seq, &one, 1);
		return 0;
	}
	/* IPv4 sockets; an IPv6 socket connected to a v4-mapped address
	 * carries the IPv4 address in skc_daddr too. */
	if (sk->skc_family != AF_INET_ && sk->skc_family != AF_INET6_)
		return 0;
	dk.addr = sk->skc_daddr;
	dk.port = sk->skc_dport;
	if (!dk.addr || !dk.port || !bpf_map_lookup_elem(&bpfproxy_sock_dead, &dk))
		return 0;
	{
		/* Only sockets the socket LB sent there. */
		struct sock_rev_key rk = {.cookie = bpf_get_socket_cookie(sk),
					  .addr	  = dk.addr,
					  .port	  = dk.port,
					  .proto  = IPPROTO_UDP_};

		if (!bpf_map_lookup_elem(&bpfproxy_sock_rev, &rk))
			return 0;
		bpf_map_delete_elem(&bpfproxy_sock_rev, &rk);
	}
	if (bpf_sock_destroy(sk) == 0)
		bpf_seq_write(ctx->meta->seq, &one, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
