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
 * sock_dst_read() is the one place that tells them apart.
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
	SOCK_X_DONE,	 /* the destination is now the backend's */
	SOCK_X_REFUSE,	 /* a service without endpoints */
	SOCK_X_NO_LOCAL, /* traffic policy Local and none on this node */
};

/* A socket call's destination as the translation sees it, for both
 * families: an IPv4 service (an IPv4 socket's address, or an IPv6 socket's
 * ::ffff:a.b.c.d) in a.w[3] with v4 set, served by the IPv4 maps (lib/lb.h,
 * bpfproxy_sock_rev); else a native IPv6 one, served by lib/lb6.h's maps
 * and bpfproxy_sock_rev6. */
struct sock_dst {
	union v6addr a;	    /* net */
	__be16	     port;  /* net */
	__u8	     proto; /* sock_proto(): 0 when not served */
	__u8	     v4;
};

/* ---- the family's keys and maps -------------------------------------- */

static __always_inline struct fe_value *sock_lookup(const struct sock_dst *d)
{
	if (d->v4) {
		struct ct_key t = {.daddr = d->a.w[3], .dport = d->port, .proto = d->proto};

		return lb_lookup(&t);
	}
	{
		struct ct6_key t = {.daddr = d->a, .dport = d->port, .proto = d->proto};

		return lb6_lookup(&t);
	}
}

/* lb_select() / lb6_select() for a socket: the backend into *be (a.w[3]
 * for IPv4). The affinity client is the socket's netns cookie, an address
 * no packet carries: IPv4 its low 24 bits in 0.0.0.0/8, IPv6 the whole
 * cookie in 100::/64 (RFC 6666, discard-only). From a socket on this node
 * the traffic is internal (a pod's or the node's), as lb_local_only()
 * treats traffic from pods: iTP for cluster IPs; external frontends reached
 * from inside the node go to every endpoint, as kube-proxy short-circuits
 * them. */
static __always_inline enum reason sock_select(void *ctx, const struct sock_dst *d,
					       const struct fe_value *f, struct sock_dst *be)
{
	__u64	    ns	  = bpf_get_netns_cookie(ctx);
	int	    local = lb_local_only(f, 1);
	enum reason r;

	if (d->v4) {
		struct ct_key  t = {.saddr = bpf_htonl((__u32)ns & 0x00ffffff),
				    .daddr = d->a.w[3],
				    .dport = d->port,
				    .proto = d->proto};
		struct backend b = {};

		r	   = lb_select(f, local, &t, bpf_ktime_get_ns(), &b);
		be->a.w[3] = b.addr;
		be->port   = b.port;
		return r;
	}
	{
		struct ct6_key	t = {.daddr = d->a, .dport = d->port, .proto = d->proto};
		struct backend6 b = {};

		t.saddr.w[0] = bpf_htonl(0x01000000);
		t.saddr.w[2] = bpf_htonl((__u32)(ns >> 32));
		t.saddr.w[3] = bpf_htonl((__u32)ns);
		r	     = lb6_select(f, local, &t, bpf_ktime_get_ns(), &b);
		be->a	     = b.addr;
		be->port     = b.port;
		return r;
	}
}

/* Record backend be -> service d under the socket's cookie, for the
 * reverse side. 0 or the map update's error. */
static __always_inline long sock_rev_save(void *ctx, const struct sock_dst *d,
					  const struct sock_dst *be, __u32 svc_id)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (d->v4) {
		struct sock_rev_key k = {
			.cookie = cookie, .addr = be->a.w[3], .port = be->port, .proto = d->proto};
		struct sock_rev_value v = {.addr = d->a.w[3], .port = d->port, .svc_id = svc_id};

		return bpf_map_update_elem(&bpfproxy_sock_rev, &k, &v, BPF_ANY);
	}
	{
		struct sock_rev6_key k = {
			.cookie = cookie, .addr = be->a, .port = be->port, .proto = d->proto};
		struct sock_rev6_value v = {.addr = d->a, .port = d->port, .svc_id = svc_id};

		return bpf_map_update_elem(&bpfproxy_sock_rev6, &k, &v, BPF_ANY);
	}
}

/* The service a backend this socket reached through one stands for:
 * 1 and d the service, else 0. */
static __always_inline int sock_rev_find(void *ctx, struct sock_dst *d)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (d->v4) {
		struct sock_rev_key k = {
			.cookie = cookie, .addr = d->a.w[3], .port = d->port, .proto = d->proto};
		struct sock_rev_value *v = bpf_map_lookup_elem(&bpfproxy_sock_rev, &k);

		if (!v)
			return 0;
		d->a.w[3] = v->addr;
		d->port	  = v->port;
		return 1;
	}
	{
		struct sock_rev6_key k = {
			.cookie = cookie, .addr = d->a, .port = d->port, .proto = d->proto};
		struct sock_rev6_value *v = bpf_map_lookup_elem(&bpfproxy_sock_rev6, &k);

		if (!v)
			return 0;
		d->a	= v->addr;
		d->port = v->port;
		return 1;
	}
}

/* ---- the translation, either family ---------------------------------- */

/* The forward translation: service -> backend, recorded for the reverse
 * side under the socket's cookie. */
static __always_inline enum sock_xlate sock_xlate_fwd(void *ctx, struct sock_dst *d,
						      enum sock_stat done)
{
	struct sock_dst	 be = {};
	struct fe_value	 f;
	struct fe_value *fe;
	enum reason	 r;

	if (!d->proto || !sock_netns_ok(ctx) || mode_standby())
		return SOCK_X_PASS;
	fe = sock_lookup(d);
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
	r = sock_select(ctx, d, &f, &be);
	if (r == REASON_NO_ENDPOINTS) {
		sock_count(SOCK_STAT_REFUSED);
		return SOCK_X_REFUSE;
	}
	if (r != REASON_NONE) {
		sock_count(SOCK_STAT_NO_LOCAL);
		return SOCK_X_NO_LOCAL;
	}
	if (sock_rev_save(ctx, d, &be, fe->svc_id)) {
		/* Without the reverse entry replies would not match the
		 * socket: leave it to the TC path. */
		sock_count(SOCK_STAT_REV_FULL);
		return SOCK_X_PASS;
	}
	d->a	= be.a;
	d->port = be.port;
	sock_count(done);
	return SOCK_X_DONE;
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

/* ---- the socket's address -------------------------------------------- */

/* is6 is a constant of each program: the verifier lets an IPv4 hook read
 * user_ip4 only and an IPv6 one user_ip6 only, and the other branch is
 * compiled out. */
static __always_inline void sock_dst_read(const struct bpf_sock_addr *ctx, int is6,
					  struct sock_dst *d)
{
	d->proto = sock_proto(ctx);
	d->port	 = (__be16)ctx->user_port;
	if (!is6) {
		d->a.w[3] = ctx->user_ip4;
		d->v4	  = 1;
		return;
	}
	d->a.w[0] = ctx->user_ip6[0];
	d->a.w[1] = ctx->user_ip6[1];
	d->a.w[2] = ctx->user_ip6[2];
	d->a.w[3] = ctx->user_ip6[3];
	d->v4	  = d->a.w[0] == 0 && d->a.w[1] == 0 && d->a.w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline void sock_dst_write(struct bpf_sock_addr *ctx, int is6,
					   const struct sock_dst *d)
{
	ctx->user_port = d->port;
	if (!is6) {
		ctx->user_ip4 = d->a.w[3];
		return;
	}
	/* v4-mapped: the prefix stays ::ffff:0:0/96 */
	if (!d->v4) {
		ctx->user_ip6[0] = d->a.w[0];
		ctx->user_ip6[1] = d->a.w[1];
		ctx->user_ip6[2] = d->a.w[2];
	}
	ctx->user_ip6[3] = d->a.w[3];
}

/* connect(), sendmsg(): service -> backend */
static __always_inline int sock_fwd(struct bpf_sock_addr *ctx, int is6, enum sock_stat done)
{
	struct sock_dst d = {};
	enum sock_xlate x;

	sock_dst_read(ctx, is6, &d);
	x = sock_xlate_fwd(ctx, &d, done);
	if (x == SOCK_X_DONE)
		sock_dst_write(ctx, is6, &d);
	return sock_verdict(x);
}

/* recvmsg(), getpeername(): backend -> the service the socket addressed */
static __always_inline int sock_rev(struct bpf_sock_addr *ctx, int is6, enum sock_stat done)
{
	struct sock_dst d = {};

	sock_dst_read(ctx, is6, &d);
	if (d.proto && sock_rev_find(ctx, &d)) {
		sock_dst_write(ctx, is6, &d);
		sock_count(done);
	}
	return SOCK_OK;
}

/* One program per hook, bpfproxy_sock_<hook> (src/dataplane/bpf/sock.ts
 * sockProgramName()). */
#define SOCK_PROG(hook, fn, is6, stat)                                                             \
	SEC("cgroup/" #hook)                                                                       \
	int bpfproxy_sock_##hook(struct bpf_sock_addr *ctx)                                        \
	{                                                                                          \
		return fn(ctx, is6, stat);                                                         \
	}

SOCK_PROG(connect4, sock_fwd, 0, SOCK_STAT_CONNECT)
SOCK_PROG(sendmsg4, sock_fwd, 0, SOCK_STAT_SENDMSG)
SOCK_PROG(recvmsg4, sock_rev, 0, SOCK_STAT_RECVMSG)
SOCK_PROG(getpeername4, sock_rev, 0, SOCK_STAT_GETPEERNAME)
SOCK_PROG(connect6, sock_fwd, 1, SOCK_STAT_CONNECT)
SOCK_PROG(sendmsg6, sock_fwd, 1, SOCK_STAT_SENDMSG)
SOCK_PROG(recvmsg6, sock_rev, 1, SOCK_STAT_RECVMSG)
SOCK_PROG(getpeername6, sock_rev, 1, SOCK_STAT_GETPEERNAME)

#endif /* BPFPROXY_SOCK_C */
