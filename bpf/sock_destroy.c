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

#include "lib/types.h"

#define IPPROTO_UDP_ 17
#define AF_INET_     2
#define AF_INET6_    10

/* The kernel's types, only the fields read, matched by name at load time. */
struct sock_common {
	__be32	       skc_daddr;
	__be16	       skc_dport;
	unsigned short skc_family;
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

/* The backends just removed (key: address, port, IPPROTO_UDP). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fe_key);
	__type(value, __u8);
} bpfproxy_sock_dead SEC(".maps");

SEC("iter/udp")
int bpfproxy_sock_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct sock_common *sk	= (struct sock_common *)ctx->udp_sk;
	struct fe_key	    dk	= {.proto = IPPROTO_UDP_};
	__u8		    one = 1;

	if (!sk)
		return 0;
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
