/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Load-time settings. The agent writes them into .rodata before load (see
 * src/dataplane/bpf/loader.ts); the verifier then treats them as constants
 * and prunes what a setting turns off. Conntrack defaults follow Calico's
 * FelixConfiguration bpfConntrackTimeouts; the SNAT port range is the
 * agent's own setting (bpfPSNATPorts is not read).
 */
#ifndef BPFPROXY_CONFIG_H
#define BPFPROXY_CONFIG_H

#include "common.h"

const volatile __u64 cfg_ct_syn_sent_ns	   = 20ULL * NSEC_PER_SEC;
const volatile __u64 cfg_ct_established_ns = 3600ULL * NSEC_PER_SEC;
const volatile __u64 cfg_ct_fins_seen_ns   = 30ULL * NSEC_PER_SEC;
const volatile __u64 cfg_ct_rst_seen_ns	   = 40ULL * NSEC_PER_SEC;
const volatile __u64 cfg_ct_udp_ns	   = 60ULL * NSEC_PER_SEC;
/* SNAT source: 0 = ask the FIB for the route's preferred source
 * (lib/fib.h fib_source_for()). */
const volatile __be32 cfg_snat_ip = 0;
/* Source used when a pod reaches itself through a service. */
const volatile __be32 cfg_hairpin_ip	= bpf_htonl(0xa9fe2a01); /* 169.254.42.1 */
const volatile __u16  cfg_snat_port_min = 20000;
const volatile __u16  cfg_snat_port_max = 29999;
/* Seed of the Maglev flow hash (lib/maglev.h); the agent's tables use the
 * same one. It must be the same on every node (src/model/maglev.ts). */
const volatile __u32 cfg_maglev_seed = 0x62707831; /* "bpx1": DEFAULT_MAGLEV_SEED */
/* Maglev table sizes by the index struct fe_value carries (0: no table);
 * the agent writes its list (src/model/maglev.ts MAGLEV_TABLE_SIZES). */
#define MAGLEV_SIZES 16
const volatile __u32 cfg_maglev_sizes[MAGLEV_SIZES] = {0,    251,  509,	  1021,	 2039,
						       4093, 8191, 16381, 32749, 65521};
/* 1: forward translated packets with bpf_fib_lookup + redirect. */
const volatile __u8 cfg_fib_redirect = 1;
/* Socket-level LB (bpf/sock.c): 0 = sockets of every network namespace
 * (--socket-lb=all); otherwise only those of the namespace with this cookie
 * (--socket-lb=host: the node's). */
const volatile __u64 cfg_sock_netns_cookie = 0;
/* 1: the kernel has bpf_set_retval() for cgroup programs (5.18): a refused
 * connect() reads ECONNREFUSED; 0: the call is pruned as dead code and the
 * refusal reads EPERM. The agent probes it. */
const volatile __u8 cfg_sock_set_retval = 1;
/* Which sockets the socket LB translates (bpfConnectTimeLoadBalancing):
 * bit 0 TCP, bit 1 UDP. 1 = Calico's default "TCP"; 3 = "Enabled"; 0 =
 * "Disabled" (the hooks stay attached and pass everything). */
const volatile __u8 cfg_sock_protos = 1;

#endif /* BPFPROXY_CONFIG_H */
