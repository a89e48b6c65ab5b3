/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing: frontends, backend slots, ClientIP affinity and
 * the node's own addresses (for NodePort). Every lookup is a hash lookup;
 * nothing here loops over services or endpoints.
 */
#ifndef BPFPROXY_LB_H
#define BPFPROXY_LB_H

#include "common.h"
#include "drop.h"
#include "maglev.h"
#include "trace.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* agent: bpfMapSizeNATFrontend */
	__type(key, struct fe_key);
	__type(value, struct fe_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_fe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* agent: bpfMapSizeNATBackend */
	__type(key, struct slot_key);
	__type(value, struct backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* agent: bpfMapSizeNATAffinity */
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct node_ip_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_node_ips SEC(".maps");

/* For operators only: svc_id -> "namespace/name:port/proto". */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct svc_name);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfproxy_svc_names SEC(".maps");

/* The frontend a packet addresses: exact (address, port, proto) first, then
 * the NodePort wildcard when the address is one of the node's that NodePort
 * answers on (--nodeport-addresses). */
static __always_inline struct fe_value *lb_lookup(const struct ct_key *t)
{
	struct fe_key k = {
		.addr  = t->daddr,
		.port  = t->dport,
		.proto = t->proto,
	};
	struct node_ip_key nk = {.addr = t->daddr};
	struct fe_value	  *fe;
	__u8		  *nf;

	fe = bpf_map_lookup_elem(&bpfproxy_fe, &k);
	if (fe)
		return fe;
	nf = bpf_map_lookup_elem(&bpfproxy_node_ips, &nk);
	if (!nf || !(*nf & NODE_IP_F_NODEPORT))
		return NULL;
	k.addr = 0;
	return bpf_map_lookup_elem(&bpfproxy_fe, &k);
}

/* Whether only node-local endpoints may serve this packet, as kube-proxy
 * decides: externalTrafficPolicy governs external frontends (NodePort,
 * LoadBalancer IPs, external IPs) for traffic from outside; pods reaching
 * them are short-circuited to all endpoints, as if the packet had gone out
 * to the load balancer and come back. internalTrafficPolicy governs cluster
 * IPs only, for everyone. */
static __always_inline int lb_local_only(const struct fe_value *fe, int from_pod)
{
	if (fe->flags & FE_F_EXTERNAL)
		return !from_pod && (fe->flags & FE_F_EXT_LOCAL);
	return !!(fe->flags & FE_F_INT_LOCAL);
}

/* Pick the backend for a new connection 't': the client's affinity entry
 * when it is live and allowed, else by the set's Maglev table (FE_F_MAGLEV,
 * when the set has the table asked for) or uniformly at random from the set. Returns REASON_NONE or why no
 * backend could be chosen. */
static __always_inline enum reason lb_select(const struct fe_value *fe, int local_only,
					     const struct ct_key *t, __u64 now, struct backend *out)
{
	struct affinity_key    ak = {.svc_id = fe->svc_id, .client = t->saddr};
	struct affinity_value *av;
	struct slot_key	       sk;
	struct backend	      *be;
	__u32		       start = local_only ? fe->cluster_count : 0;
	__u32		       n     = local_only ? fe->local_count : fe->cluster_count;
	__u32		       ord;

	if (n == 0)
		return (fe->cluster_count == 0 && fe->local_count == 0) ? REASON_NO_ENDPOINTS
									: REASON_NO_LOCAL_ENDPOINTS;

	if (fe->affinity_timeout) {
		av = bpf_map_lookup_elem(&bpfproxy_affinity, &ak);
		if (av && now - av->last_used_ns < (__u64)fe->affinity_timeout * NSEC_PER_SEC &&
		    (!local_only || (av->backend.flags & BE_F_LOCAL))) {
			if (!cfg_trace) /* lib/trace.h: no map writes */
				av->last_used_ns = now;
			*out = av->backend;
			return REASON_NONE;
		}
	}

	/* Node-local tables exist for Local traffic policies only; the
	 * backend node of a tunnelled flow (lib/tunnel_svc.h tun_backend_new())
	 * picks among its own endpoints of a Cluster-policy frontend: at
	 * random (the ingress node's Maglev choice was of this node). */
	if ((fe->flags & FE_F_MAGLEV) && (!local_only || fe->maglev_size_local)) {
		if (maglev_pick(fe, local_only, n, t, &ord))
			return REASON_BACKEND_MISSING;
	} else {
		ord = bpf_get_prandom_u32() % n;
	}
	sk.set_id = fe->set_id;
	sk.index  = start + ord;
	be	  = bpf_map_lookup_elem(&bpfproxy_slots, &sk);
	if (!be)
		return REASON_BACKEND_MISSING;
	*out = *be;

	if (fe->affinity_timeout && !cfg_trace) {
		struct affinity_value nv = {.backend = *be, .last_used_ns = now};

		bpf_map_update_elem(&bpfproxy_affinity, &ak, &nv, BPF_ANY);
	}
	return REASON_NONE;
}

#endif /* BPFPROXY_LB_H */
