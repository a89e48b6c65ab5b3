// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The one BPF object: every program bpfproxy attaches, sharing one set of
 * maps (defined in bpf/lib/). The agent loads it once (src/dataplane/bpf/loader.ts,
 * PROGRAMS) and picks each program by name; the maps are pinned by name so
 * an upgrade adopts the running agent's maps.
 *
 * Each hook's entry point is a thin file of its own, included here:
 */
#include "tc_pod.c"    /* bpfproxy_pod:  TC ingress, pod-facing interfaces */
#include "tc_data.c"   /* bpfproxy_data: TC ingress, data (uplink) interfaces */
#include "tc_host.c"   /* bpfproxy_host: TC egress, replies of host-network endpoints */
#include "tc_to_pod.c" /* bpfproxy_to_pod: TC egress, pod-facing interfaces (policy) */
#include "xdp_afxdp.c" /* bpfproxy_xdp_afxdp: XDP, steering into the AF_XDP engine */
#include "xdp_data.c"  /* bpfproxy_xdp_data: XDP, data interfaces (--xdp-acceleration) */
#include "sock.c"      /* bpfproxy_sock_*: cgroup v2 socket hooks (socket-level LB) */

char LICENSE[] SEC("license") = "Dual BSD/GPL";
