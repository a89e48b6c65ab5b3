/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every BPF map key and value bpfproxy uses, in one place.
 *
 * The TypeScript codecs in src/dataplane/bpf/codecs.ts mirror these structs
 * field by field; test/codecs-btf.test.ts checks sizes and offsets against
 * the BTF of the compiled object, so a change here that is not made there
 * fails the tests.
 *
 * Byte order: "net" = network byte order (as on the wire), "host" = CPU order.
 * All structs are padded explicitly so that no implicit hole is left for the
 * verifier or for the codecs to guess at.
 */
#ifndef BPFPROXY_TYPES_H
#define BPFPROXY_TYPES_H

/* ---- load balancer (lib/lb.h) ------------------------------------------ */

/* A service address as a client addresses it. addr 0.0.0.0 is the NodePort
 * wildcard: it matches any address in the node_ips map. */
struct fe_key {
	__be32 addr;  /* net */
	__be16 port;  /* net */
	__u8   proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8   pad;
};

enum fe_flags {
	FE_F_EXTERNAL  = 1 << 0, /* NodePort, LoadBalancer ingress or externalIP */
	FE_F_EXT_LOCAL = 1 << 1, /* externalTrafficPolicy: Local */
	FE_F_INT_LOCAL = 1 << 2, /* internalTrafficPolicy: Local */
	FE_F_NODEPORT  = 1 << 3, /* the frontend is a NodePort (wildcard address) */
	FE_F_MAGLEV    = 1 << 4, /* new flows pick by Maglev table (lib/maglev.h), not at random */
	FE_F_SRC_RANGE = 1 << 5, /* LoadBalancer IP with loadBalancerSourceRanges: new flows only
				  * from the prefixes under svc_id in bpfproxy_lb_srcs (lib/lbsrc.h) */
};

/* Backend slots [0, cluster_count) are the cluster-wide set; slots
 * [cluster_count, cluster_count + local_count) the node-local set. Both are
 * already narrowed to ready endpoints (or serving-terminating ones where none
 * is ready) by the agent. With FE_F_MAGLEV, each set with a non-zero size
 * here has a Maglev table of cfg_maglev_sizes[size] entries under set_id
 * (struct maglev_key, lib/config.h); sizes change only together with
 * set_id. */
struct fe_value {
	__u32 svc_id;	     /* host: stable id of the service port */
	__u32 set_id;	     /* host: backend set in use (changes on update) */
	__u16 cluster_count; /* host */
	__u16 local_count;   /* host */
	__u16 flags;	     /* host: enum fe_flags */
	__u8 maglev_size; /* cluster-wide set's Maglev table: index into cfg_maglev_sizes; 0 = none */
	__u8  maglev_size_local; /* node-local set's, the same way */
	__u32 affinity_timeout;	 /* host: seconds; 0 = no ClientIP affinity */
};

struct slot_key {
	__u32 set_id; /* host */
	__u32 index;  /* host */
};

enum backend_flags {
	BE_F_LOCAL = 1 << 0, /* endpoint on this node */
};

struct backend {
	__be32 addr;  /* net */
	__be16 port;  /* net */
	__u8   flags; /* enum backend_flags */
	__u8   pad;
};

/* Maglev lookup tables (lib/maglev.h): a table of M entries is stored in
 * chunks of MAGLEV_CHUNK_BYTES bytes, M / entries-per-chunk of them rounded
 * up, under the backend set's id. An entry is the ordinal of a backend in
 * its set (0 = the set's first slot): one byte when the set has at most 256
 * backends, else two bytes, little-endian. Chunking keeps a table at ~1 or
 * ~2 bytes an entry in a plain hash map (an element per entry would cost
 * ~70 bytes), so no map-in-map is needed. */
#define MAGLEV_CHUNK_BYTES                                                                         \
	448 /* 48 (htab_elem) + 8 (key) + 448 + 8 = 512: one kmalloc-512 object */

enum maglev_table {
	MAGLEV_T_CLUSTER = 0, /* slots [0, cluster_count) */
	MAGLEV_T_LOCAL	 = 1, /* slots [cluster_count, cluster_count + local_count) */
};

struct maglev_key {
	__u32 set_id; /* host */
	__u16 table;  /* host: enum maglev_table */
	__u16 chunk;  /* host: entry / entries-per-chunk */
};

struct maglev_chunk {
	__u8 ord[MAGLEV_CHUNK_BYTES];
};

struct affinity_key {
	__u32  svc_id; /* host */
	__be32 client; /* net */
};

struct affinity_value {
	struct backend backend;
	__u64	       last_used_ns; /* host: bpf_ktime_get_ns() */
};

/* The node's own addresses. The value is enum node_ip_flags: NodePort
 * answers only on the addresses flagged NODE_IP_F_NODEPORT (kube-proxy's
 * --nodeport-addresses; all of them by default). Agents before the flag
 * wrote 1 for every address, which reads the same. */
struct node_ip_key {
	__be32 addr; /* net */
};

enum node_ip_flags {
	NODE_IP_F_NODEPORT = 1 << 0, /* NodePort frontends (wildcard address) answer here */
};

/* Pod-facing veths we may redirect into directly (bpf_redirect_peer).
 * Value unused (1). */
struct pod_if_key {
	__u32 ifindex; /* host */
};

/* Source addresses a pod interface may send from: the routes that point at
 * it (LPM on ifindex, then address). An entry with prefixlen 32 (ifindex
 * only) and value 0 marks the interface as checked: a source no longer
 * prefix matches lands there and is dropped. Interfaces with no entry at
 * all are not checked (no route names them, e.g. bridge-based CNIs). */
struct pod_src_key {
	__u32  prefixlen; /* host: 32 (ifindex) + address prefix length */
	__be32 ifindex;	  /* net: so that the trie compares it first, whole */
	__be32 addr;	  /* net */
};

/* loadBalancerSourceRanges (lib/lbsrc.h): the client prefixes a service
 * port's LoadBalancer IPs accept new flows from, LPM on the service port's
 * id, then the client address. Value unused (1). A service port whose LB
 * frontends carry FE_F_SRC_RANGE and that has no entry here accepts no
 * one (every range it listed was unusable). */
struct lb_src_key {
	__u32  prefixlen; /* host: 32 (svc_id) + client prefix length */
	__be32 svc_id;	  /* net: so that the trie compares it first, whole */
	__be32 addr;	  /* net */
};

/* Service names for operators (CLI); never read by the datapath. */
struct svc_name {
	/* "namespace/name:port/proto", NUL padded; the longest valid one is
	 * 63 + 1 + 63 + 1 + 63 + 1 + 4 = 196 bytes (agent: SVC_NAME_BYTES) */
	char name[256];
};

/* ---- conntrack (lib/conntrack.h) --------------------------------------- */

/* A flow as seen on the wire in one direction. ICMP errors are matched by
 * the flow they quote. */
struct ct_key {
	__be32 saddr; /* net */
	__be32 daddr; /* net */
	__be16 sport; /* net */
	__be16 dport; /* net */
	__u8   proto;
	__u8   pad[3];
};

enum ct_dir {
	CT_DIR_FWD   = 1, /* client -> service: apply DNAT (and SNAT) */
	CT_DIR_REPLY = 2, /* backend -> client: apply the reverse */
};

enum ct_state_bits {
	CT_S_REPLY_SEEN	 = 1 << 0, /* a packet came back: established */
	CT_S_FIN_FWD	 = 1 << 1,
	CT_S_FIN_REPLY	 = 1 << 2,
	CT_S_RST	 = 1 << 3,
	CT_S_ESTABLISHED = 1 << 4, /* TCP: the client acknowledged after a reply
				    * (handshake done); only then the long timeout */
};

enum ct_flags {
	CT_F_SNAT     = 1 << 0, /* source rewritten (eTP=Cluster remote, hairpin) */
	CT_F_HAIRPIN  = 1 << 1, /* client is its own backend */
	CT_F_EXTERNAL = 1 << 2, /* created by traffic from a data interface */
	CT_F_HOST_BE  = 1 << 3, /* the backend is this node itself (host network):
				 * its replies leave through the TC egress hook */
};

/* One entry per direction. Packets matching key are rewritten to
 * (nat_saddr:nat_sport -> nat_daddr:nat_dport); the entry of the other
 * direction is keyed by the reverse of that rewritten tuple. The two are
 * created together, live as long as either is fresh and are removed
 * together (lib/conntrack.h, the agent's GC). */
struct ct_value {
	__u64  expires_ns; /* host: bpf_ktime_get_ns() deadline */
	__u64  created_ns; /* host */
	__be32 nat_saddr;  /* net */
	__be32 nat_daddr;  /* net */
	__be16 nat_sport;  /* net */
	__be16 nat_dport;  /* net */
	__u8   dir;	   /* enum ct_dir */
	__u8   state;	   /* enum ct_state_bits */
	__u8   flags;	   /* enum ct_flags */
	__u8   pad;
	__u32  svc_id; /* host */
	__u32  pad2;
};

/* ---- counters (lib/drop.h) --------------------------------------------- */

/* Per-CPU, indexed by enum reason. */
struct reason_counter {
	__u64 packets; /* host */
	__u64 bytes;   /* host */
};

#endif /* BPFPROXY_TYPES_H */
