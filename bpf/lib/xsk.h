/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Steering into the AF_XDP vector engine (addon/engine/): which frames the
 * XDP program hands to the engine's sockets, and the sockets themselves.
 * The engine's agent (src/dataplane/afxdp/) fills these maps; none is
 * pinned: they belong to the engine's own load of the object and go with
 * it (a stopped or crashed engine leaves nothing that redirects).
 *
 * A frame goes to the engine only when it is IPv4 TCP/UDP, not a fragment,
 * or IPv6 with TCP/UDP right after the fixed header (no extension header,
 * no fragment: the engine does not walk them), arrived on a port and queue
 * the engine has a socket for, and either
 *  - is addressed to a frontend the engine serves (bpfproxy_xsk_fes: exact
 *    address, or address 0 for a NodePort on any node address), or
 *  - is a reply to one of the engine's SNAT'd flows: to a node address, a
 *    port in the engine's SNAT range, with a reply entry in the conntrack
 *    the engine mirrors its sessions into (bpf/lib/conntrack.h).
 * An ICMP error (unreachable, time exceeded, parameter problem) quoting a
 * TCP/UDP packet goes to the engine when the flow of the quoted packet
 * would (the quoted tuple reversed: a frontend's flow, or a SNAT'd flow's
 * reply): the engine translates it as the TC path would.
 * (IPv6: bpfproxy_xsk_fes6, bpfproxy_node_ips6 and bpfproxy_ct6 alike; no
 * ICMPv6 goes to the engine: neighbour discovery and errors stay with the
 * kernel.) Everything else passes to the kernel (and the TC programs). The redirect
 * falls back to XDP_PASS when no socket is bound to the slot (engine
 * stopped, restarting): traffic is never blackholed.
 */
#ifndef BPFPROXY_XSK_H
#define BPFPROXY_XSK_H

#include "common.h"
#include "conntrack.h"
#include "conntrack6.h"
#include "lb.h"
#include "lb6.h"

#define XSK_SLOTS 1024

/* Per interface the engine runs on: its sockets sit in XSKMAP slots
 * [base, base + queues), one per RX queue. */
struct xsk_if_value {
	__u32 base;   /* host */
	__u32 queues; /* host */
};

/* Engine-wide settings (one entry, key 0). */
struct xsk_config {
	__u16 snat_port_min; /* host: the engine's SNAT port range */
	__u16 snat_port_max; /* host */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSK_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} bpfproxy_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32); /* ifindex */
	__type(value, struct xsk_if_value);
} bpfproxy_xsk_ifs SEC(".maps");

/* Frontends the engine serves; value unused (1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fe_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bpfproxy_xsk_fes SEC(".maps");

/* IPv6 frontends the engine serves; value unused (1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fe6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bpfproxy_xsk_fes6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xsk_config);
} bpfproxy_xsk_cfg SEC(".maps");

static __always_inline int xsk_icmp_error(__u8 type)
{
	return type == 3 || type == 11 || type == 12;
}

/* Whether a frame with this tuple belongs to the engine. */
static __always_inline int xsk_wanted(const struct ct_key *t)
{
	struct fe_key	   fk = {.addr = t->daddr, .port = t->dport, .proto = t->proto};
	struct node_ip_key nk = {.addr = t->daddr};
	struct xsk_config *cfg;
	struct ct_value	  *ct;
	__u32		   zero = 0;
	__u16		   dport;

	if (bpf_map_lookup_elem(&bpfproxy_xsk_fes, &fk))
		return 1;
	if (!bpf_map_lookup_elem(&bpfproxy_node_ips, &nk))
		return 0;
	fk.addr = 0;
	if (bpf_map_lookup_elem(&bpfproxy_xsk_fes, &fk))
		return 1;
	cfg = bpf_map_lookup_elem(&bpfproxy_xsk_cfg, &zero);
	if (!cfg)
		return 0;
	dport = bpf_ntohs(t->dport);
	if (dport < cfg->snat_port_min || dport > cfg->snat_port_max)
		return 0;
	ct = bpf_map_lookup_elem(&bpfproxy_ct, t);
	return ct && ct->dir == CT_DIR_REPLY;
}

/* As xsk_wanted(), for an IPv6 tuple. */
static __always_inline int xsk_wanted6(const struct ct6_key *t)
{
	struct fe6_key	   fk = {.addr = t->daddr, .port = t->dport, .proto = t->proto};
	struct xsk_config *cfg;
	struct ct6_value  *ct;
	__u32		   zero = 0;
	__u16		   dport;

	if (bpf_map_lookup_elem(&bpfproxy_xsk_fes6, &fk))
		return 1;
	if (!node_ip6_flags(&t->daddr))
		return 0;
	__builtin_memset(&fk.addr, 0, sizeof(fk.addr));
	if (bpf_map_lookup_elem(&bpfproxy_xsk_fes6, &fk))
		return 1;
	cfg = bpf_map_lookup_elem(&bpfproxy_xsk_cfg, &zero);
	if (!cfg)
		return 0;
	dport = bpf_ntohs(t->dport);
	if (dport < cfg->snat_port_min || dport > cfg->snat_port_max)
		return 0;
	ct = bpf_map_lookup_elem(&bpfproxy_ct6, t);
	return ct && ct->dir == CT_DIR_REPLY;
}

#endif /* BPFPROXY_XSK_H */
