/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The IPv6 maps' keys and values (lib/lb6.h, lib/conntrack6.h). Separate
 * maps from the IPv4 ones, as Cilium keeps lb6/ct6 beside lb4/ct4: the IPv4
 * keys keep their size, so IPv4 per-packet cost and memory do not change.
 * Values without an address (struct fe_value, struct slot_key) and every
 * enum are shared with IPv4 (lib/types.h).
 *
 * Mirrored by src/dataplane/bpf/codecs.ts (checked against the BTF by
 * test/codecs-btf.test.ts). Byte order as in lib/types.h.
 */
#ifndef BPFPROXY_TYPES6_H
#define BPFPROXY_TYPES6_H

/* An IPv6 address, network byte order, as four words (so the verifier sees
 * 4-byte aligned loads and compares). */
union v6addr {
	__be32 w[4];
	__u8   b[16];
};

/* addr :: is the NodePort wildcard: it matches any address in
 * bpfproxy_node_ips6. */
struct fe6_key {
	union v6addr addr;  /* net */
	__be16	     port;  /* net */
	__u8	     proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8	     pad;
};

struct backend6 {
	union v6addr addr;  /* net */
	__be16	     port;  /* net */
	__u8	     flags; /* enum backend_flags */
	__u8	     pad;
};

struct affinity6_key {
	__u32	     svc_id; /* host */
	__u32	     pad;
	union v6addr client; /* net */
};

struct affinity6_value {
	struct backend6 backend;
	__u64		last_used_ns; /* host */
};

struct node_ip6_key {
	union v6addr addr; /* net */
};

/* loadBalancerSourceRanges, IPv6 (as struct lb_src_key). */
struct lb_src6_key {
	__u32	     prefixlen; /* host: 32 (svc_id) + client prefix length */
	__be32	     svc_id;	/* net */
	union v6addr addr;	/* net */
};

/* Pod source check, IPv6 (as struct pod_src_key, lib/pod.h). */
struct pod_src6_key {
	__u32	     prefixlen; /* host: 32 (ifindex) + address prefix length */
	__be32	     ifindex;	/* net */
	union v6addr addr;	/* net */
};

/* A flow as seen on the wire in one direction (as struct ct_key). */
struct ct6_key {
	union v6addr saddr; /* net */
	union v6addr daddr; /* net */
	__be16	     sport; /* net */
	__be16	     dport; /* net */
	__u8	     proto;
	__u8	     pad[3];
};

/* As struct ct_value, with IPv6 rewrite addresses. */
struct ct6_value {
	__u64	      expires_ns; /* host */
	__u64	      created_ns; /* host */
	union v6addr  nat_saddr;  /* net */
	union v6addr  nat_daddr;  /* net */
	__be16	      nat_sport;  /* net */
	__be16	      nat_dport;  /* net */
	__u8	      dir;	  /* enum ct_dir */
	__u8	      state;	  /* enum ct_state_bits */
	__u8	      flags;	  /* enum ct_flags */
	__u8	      pad;
	__u32	      svc_id;  /* host */
	__u32	      pol_gen; /* host: as struct ct_value (lib/policy6.h) */
	struct ct_fwd fwd; /* the TC hooks' forwarding cache (lib/fib.h); the agent writes zeros */
};

/* IPv6 network policy (lib/policy6.h): address -> identity, longest
 * prefix first, as struct ipcache_key (value: struct ipcache_value). */
struct ipcache6_key {
	__u32	     prefixlen; /* host: 0..128 */
	union v6addr addr;	/* net */
};

/* Socket-level LB of native IPv6 sockets (bpf/sock.c), as struct
 * sock_rev_key / sock_rev_value: (socket cookie, backend) -> the service
 * address the socket addressed. */
struct sock_rev6_key {
	__u64	     cookie; /* host: bpf_get_socket_cookie() */
	union v6addr addr;   /* net: the backend */
	__be16	     port;   /* net */
	__u8	     proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8	     pad;
	__u32	     pad2;
};

struct sock_rev6_value {
	union v6addr addr; /* net: the service address the socket addressed */
	__be16	     port; /* net */
	__u16	     pad;
	__u32	     svc_id; /* host */
};

#endif /* BPFPROXY_TYPES6_H */
