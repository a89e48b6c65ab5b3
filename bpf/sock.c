// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level load balancing (--socket-lb host|all): cgroup v2 hooks that
 * translate a service address at connect() / sendmsg() time, so the
 * connection's packets carry the backend's address from the first one on
 * and no packet is translated afterwards.
 *
 *   connect4 / connect6    TCP and connected UDP: the destination becomes a
 *                          backend chosen as the TC path would (lib/lb.h)
 *   sendmsg4 / sendmsg6    unconnected UDP: the same, per datagram
 *   recvmsg4 / recvmsg6    UDP replies: the backend's address back to the
 *                          service address the socket sent to
 *   getpeername4 / 6       the service address, not the backend's
 *
 * The *6 programs serve native IPv6 services (lib/lb6.h's maps) and
 * v4-mapped addresses (::ffff:a.b.c.d, the IPv4 maps) on IPv6 sockets;
 * sock6_v4() is the one place that tells them apart.
 *
 * The reverse translation is keyed by the socket's cookie and the backend
 * (struct sock_rev_key, IPv6: struct sock_rev6_key): what a socket sent to
 * a service and nothing else is translated back. The TC programs see the backend's address on these
 * packets: no frontend matches it, so they translate nothing (their
 * conntrack holds no entry for such a flow); raw sockets and traffic of
 * processes outside the cgroup meet the TC path as before.
 *
 * Left to the TC path (the socket passes untranslated): frontends with
 * loadBalancerSourceRanges (the client's address is not known before the
 * route is chosen), and every new connection while the datapath is
 * draining or on standby (lib/mode.h).
 *
 * ClientIP affinity is per network namespace here (Cilium's socket LB does
 * the same): the key's client is the socket's netns cookie cut to 24 bits,
 * an address in 0.0.0.0/8 that no packet carries, so it never meets the TC
 * path's entries keyed by the client's real address (IPv6: the whole
 * cookie in 100::/64, the discard-only prefix of RFC 6666). A pod has one
 * netns and one address: the same thing as ClientIP for it.
 */
#ifndef BPFPROXY_SOCK_C
#define BPFPROXY_SOCK_C

#include "lib/common.h"
#include "lib/config.h"
#include "lib/lb.h"
#include "lib/lb6.h"
#include "lib/mode.h"

/* Not uapi: include/linux/net.h and include/uapi/asm-generic/errno.h. */
#define SOCK_STREAM	  1
#define SOCK_DGRAM	  2
#define SOCK_ECONNREFUSED 111
/* sock_addr programs: 1 lets the call go on, 0 fails it (EPERM unless
 * bpf_set_retval() said otherwise). */
#define SOCK_OK	    1
#define SOCK_REJECT 0

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

/* The enum the agent copies (src/dataplane/bpf/codecs.ts SockStat), in the
 * object's BTF for the tests to compare. */
const volatile struct {
	enum sock_stat sock_stat;
} bpfproxy_sock_enums_btf;

/* Per-CPU event counters, index enum sock_stat. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, __SOCK_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_sock_stats SEC(".maps");

static __always_inline void sock_count(enum sock_stat s)
{
	__u32  k = s;
	__u64 *v = bpf_map_lookup_elem(&bpfproxy_sock_stats, &k);

	if (v)
		*v += 1;
}

static __always_inline int sock_netns_ok(void *ctx)
{
	return cfg_sock_netns_cookie == 0 || bpf_get_netns_cookie(ctx) == cfg_sock_netns_cookie;
}

/* The socket's protocol as the frontend map keys it, or 0 (not served:
 * another protocol, or one bpfConnectTimeLoadBalancing leaves to TC). */
static __always_inline __u8 sock_proto(const struct bpf_sock_addr *ctx)
{
	if ((cfg_sock_protos & 1) && ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP)
		return IPPROTO_TCP;
	if ((cfg_sock_protos & 2) && ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP)
		return IPPROTO_UDP;
	return 0;
}

enum sock_xlate {
	SOCK_X_PASS = 0, /* not a service (or left to TC): untouched */
	SOCK_X_DONE,	 /* *addr, *port now the backend's */
	SOCK_X_REFUSE,	 /* a service without endpoints */
	SOCK_X_NO_LOCAL, /* traffic policy Local and none on this node */
};

/* The forward translation: service (addr, port) -> backend, recorded for
 * the reverse side under the socket's cookie. */
static __always_inline enum sock_xlate sock_xlate_fwd(void *ctx, __u8 proto, __be32 *addr,
						      __be16 *port, enum sock_stat done)
{
	struct ct_key	 t  = {.daddr = *addr, .dport = *port, .proto = proto};
	struct backend	 be = {};
	struct fe_value	 f;
	struct fe_value *fe;
	enum reason	 r;

	if (!proto || !sock_netns_ok(ctx) || mode_standby())
		return SOCK_X_PASS;
	fe = lb_lookup(&t);
	if (!fe)
		return SOCK_X_PASS;
	if ((fe->flags & FE_F_SRC_RANGE) || mode_draining()) {
		sock_count(SOCK_STAT_LEFT_TO_TC);
		return SOCK_X_PASS;
	}
	/* A private copy: Maglev hashes the 5-tuple, which a socket does not
	 * have yet (no source port): uniform random, as without Maglev. */
	f = *fe;
	f.flags &= ~FE_F_MAGLEV;
	t.saddr = bpf_htonl((__u32)bpf_get_netns_cookie(ctx) & 0x00ffffff);
	/* From a socket on this node: internal traffic (a pod's or the
	 * node's), as lb_local_only() treats traffic from pods: iTP for
	 * cluster IPs; external frontends reached from inside the node go to
	 * every endpoint, as kube-proxy short-circuits them. */
	r = lb_select(&f, lb_local_only(&f, 1), &t, bpf_ktime_get_ns(), &be);
	if (r == REASON_NO_ENDPOINTS) {
		sock_count(SOCK_STAT_REFUSED);
		return SOCK_X_REFUSE;
	}
	if (r != REASON_NONE) {
		sock_count(SOCK_STAT_NO_LOCAL);
		return SOCK_X_NO_LOCAL;
	}
	{
		struct sock_rev_key   k = {.cookie = bpf_get_socket_cookie(ctx),
					   .addr   = be.addr,
					   .port   = be.port,
					   .proto  = proto};
		struct sock_rev_value v = {.addr = *addr, .port = *port, .svc_id = fe->svc_id};

		if (bpf_map_update_elem(&bpfproxy_sock_rev, &k, &v, BPF_ANY)) {
			/* Without the reverse entry replies would not match the
			 * socket: leave it to the TC path. */
			sock_count(SOCK_STAT_REV_FULL);
			return SOCK_X_PASS;
		}
	}
	*addr = be.addr;
	*port = be.port;
	sock_count(done);
	return SOCK_X_DONE;
}

/* The reverse: a backend this socket reached through a service reads as
 * the service. Returns 1 when (addr, port) changed. */
static __always_inline int sock_xlate_rev(void *ctx, __u8 proto, __be32 *addr, __be16 *port)
{
	struct sock_rev_key k = {
		.cookie = bpf_get_socket_cookie(ctx), .addr = *addr, .port = *port, .proto = proto};
	struct sock_rev_value *v;

	if (!proto)
		return 0;
	v = bpf_map_lookup_elem(&bpfproxy_sock_rev, &k);
	if (!v)
		return 0;
	*addr = v->addr;
	*port = v->port;
	return 1;
}

/* A refused connect()/sendmsg() reads ECONNREFUSED, as kube-proxy's REJECT
 * (and our TC path's RST) reads to the client. That is also the answer for
 * traffic policy Local with no local endpoint, which the TC path drops (the
 * client times out): a socket has no "drop", it fails at once. Kernels
 * without bpf_set_retval() (before 5.18, cfg_sock_set_retval = 0) say
 * EPERM; the verifier never sees the call there (dead code on a constant). */
static __always_inline int sock_verdict(enum sock_xlate x)
{
	if (x != SOCK_X_REFUSE && x != SOCK_X_NO_LOCAL)
		return SOCK_OK;
	if (cfg_sock_set_retval)
		bpf_set_retval(-SOCK_ECONNREFUSED);
	return SOCK_REJECT;
}

/* ---- IPv4 sockets ---------------------------------------------------- */

static __always_inline int sock4_fwd(struct bpf_sock_addr *ctx, enum sock_stat done)
{
	__be32		addr = ctx->user_ip4;
	__be16		port = (__be16)ctx->user_port;
	enum sock_xlate x    = sock_xlate_fwd(ctx, sock_proto(ctx), &addr, &port, done);

	if (x == SOCK_X_DONE) {
		ctx->user_ip4  = addr;
		ctx->user_port = port;
	}
	return sock_verdict(x);
}

static __always_inline int sock4_rev(struct bpf_sock_addr *ctx, enum sock_stat done)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;

	if (sock_xlate_rev(ctx, sock_proto(ctx), &addr, &port)) {
		ctx->user_ip4  = addr;
		ctx->user_port = port;
		sock_count(done);
	}
	return SOCK_OK;
}

SEC("cgroup/connect4")
int bpfproxy_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_fwd(ctx, SOCK_STAT_CONNECT);
}

SEC("cgroup/sendmsg4")
int bpfproxy_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_fwd(ctx, SOCK_STAT_SENDMSG);
}

SEC("cgroup/recvmsg4")
int bpfproxy_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_rev(ctx, SOCK_STAT_RECVMSG);
}

SEC("cgroup/getpeername4")
int bpfproxy_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_rev(ctx, SOCK_STAT_GETPEERNAME);
}

/* ---- IPv6 sockets ---------------------------------------------------- */

/* An IPv6 socket's address as IPv4 when it is v4-mapped (::ffff:a.b.c.d):
 * 1 and *v4 set, else 0 (native IPv6: the IPv6 maps). */
static __always_inline int sock6_v4(const struct bpf_sock_addr *ctx, __be32 *v4)
{
	if (ctx->user_ip6[0] != 0 || ctx->user_ip6[1] != 0 ||
	    ctx->user_ip6[2] != bpf_htonl(0x0000ffff))
		return 0;
	*v4 = ctx->user_ip6[3];
	return 1;
}

static __always_inline void sock6_addr(const struct bpf_sock_addr *ctx, union v6addr *a)
{
	a->w[0] = ctx->user_ip6[0];
	a->w[1] = ctx->user_ip6[1];
	a->w[2] = ctx->user_ip6[2];
	a->w[3] = ctx->user_ip6[3];
}

static __always_inline void sock6_set_addr(struct bpf_sock_addr *ctx, const union v6addr *a)
{
	ctx->user_ip6[0] = a->w[0];
	ctx->user_ip6[1] = a->w[1];
	ctx->user_ip6[2] = a->w[2];
	ctx->user_ip6[3] = a->w[3];
}

/* sock_xlate_fwd() for native IPv6 services (lib/lb6.h). */
static __always_inline enum sock_xlate sock6_xlate_fwd(void *ctx, __u8 proto, union v6addr *addr,
						       __be16 *port, enum sock_stat done)
{
	struct ct6_key	 t  = {.daddr = *addr, .dport = *port, .proto = proto};
	struct backend6	 be = {};
	struct fe_value	 f;
	struct fe_value *fe;
	enum reason	 r;
	__u64		 ns;

	if (!proto || !sock_netns_ok(ctx) || mode_standby())
		return SOCK_X_PASS;
	fe = lb6_lookup(&t);
	if (!fe)
		return SOCK_X_PASS;
	if ((fe->flags & FE_F_SRC_RANGE) || mode_draining()) {
		sock_count(SOCK_STAT_LEFT_TO_TC);
		return SOCK_X_PASS;
	}
	f = *fe;
	f.flags &= ~FE_F_MAGLEV;
	/* The affinity client: the netns cookie in 100::/64 (RFC 6666,
	 * discard-only), which no packet carries. */
	ns	     = bpf_get_netns_cookie(ctx);
	t.saddr.w[0] = bpf_htonl(0x01000000);
	t.saddr.w[2] = bpf_htonl((__u32)(ns >> 32));
	t.saddr.w[3] = bpf_htonl((__u32)ns);
	r	     = lb6_select(&f, lb_local_only(&f, 1), &t, bpf_ktime_get_ns(), &be);
	if (r == REASON_NO_ENDPOINTS) {
		sock_count(SOCK_STAT_REFUSED);
		return SOCK_X_REFUSE;
	}
	if (r != REASON_NONE) {
		sock_count(SOCK_STAT_NO_LOCAL);
		return SOCK_X_NO_LOCAL;
	}
	{
		struct sock_rev6_key   k = {.cookie = bpf_get_socket_cookie(ctx),
					    .addr   = be.addr,
					    .port   = be.port,
					    .proto  = proto};
		struct sock_rev6_value v = {.addr = *addr, .port = *port, .svc_id = fe->svc_id};

		if (bpf_map_update_elem(&bpfproxy_sock_rev6, &k, &v, BPF_ANY)) {
			sock_count(SOCK_STAT_REV_FULL);
			return SOCK_X_PASS;
		}
	}
	*addr = be.addr;
	*port = be.port;
	sock_count(done);
	return SOCK_X_DONE;
}

static __always_inline int sock6_xlate_rev(void *ctx, __u8 proto, union v6addr *addr, __be16 *port)
{
	struct sock_rev6_key k = {
		.cookie = bpf_get_socket_cookie(ctx), .addr = *addr, .port = *port, .proto = proto};
	struct sock_rev6_value *v;

	if (!proto)
		return 0;
	v = bpf_map_lookup_elem(&bpfproxy_sock_rev6, &k);
	if (!v)
		return 0;
	*addr = v->addr;
	*port = v->port;
	return 1;
}

static __always_inline int sock6_fwd(struct bpf_sock_addr *ctx, enum sock_stat done)
{
	__be32		addr;
	__be16		port = (__be16)ctx->user_port;
	union v6addr	a6;
	enum sock_xlate x;

	if (sock6_v4(ctx, &addr)) {
		x = sock_xlate_fwd(ctx, sock_proto(ctx), &addr, &port, done);
		if (x == SOCK_X_DONE) {
			ctx->user_ip6[3] = addr;
			ctx->user_port	 = port;
		}
		return sock_verdict(x);
	}
	sock6_addr(ctx, &a6);
	x = sock6_xlate_fwd(ctx, sock_proto(ctx), &a6, &port, done);
	if (x == SOCK_X_DONE) {
		sock6_set_addr(ctx, &a6);
		ctx->user_port = port;
	}
	return sock_verdict(x);
}

static __always_inline int sock6_rev(struct bpf_sock_addr *ctx, enum sock_stat done)
{
	__be32	     addr;
	__be16	     port = (__be16)ctx->user_port;
	union v6addr a6;

	if (sock6_v4(ctx, &addr)) {
		if (sock_xlate_rev(ctx, sock_proto(ctx), &addr, &port)) {
			ctx->user_ip6[3] = addr;
			ctx->user_port	 = port;
			sock_count(done);
		}
		return SOCK_OK;
	}
	sock6_addr(ctx, &a6);
	if (sock6_xlate_rev(ctx, sock_proto(ctx), &a6, &port)) {
		sock6_set_addr(ctx, &a6);
		ctx->user_port = port;
		sock_count(done);
	}
	return SOCK_OK;
}

SEC("cgroup/connect6")
int bpfproxy_sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock6_fwd(ctx, SOCK_STAT_CONNECT);
}

SEC("cgroup/sendmsg6")
int bpfproxy_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_fwd(ctx, SOCK_STAT_SENDMSG);
}

SEC("cgroup/recvmsg6")
int bpfproxy_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_rev(ctx, SOCK_STAT_RECVMSG);
}

SEC("cgroup/getpeername6")
int bpfproxy_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock6_rev(ctx, SOCK_STAT_GETPEERNAME);
}

#endif /* BPFPROXY_SOCK_C */
