/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's outward face, in C that C++ can include (no atomics, no
 * engine internals): what addon/engine/binding.cc calls. engine.h holds
 * the internals and includes this.
 */
#ifndef BPFPROXY_ENGINE_API_H
#define BPFPROXY_ENGINE_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ENG_VEC_MAX	256
#define ENG_MAX_PORTS	64
#define ENG_MAX_WORKERS 64
#define ENG_FRAME_SIZE	2048
#define ENG_TRACE_MAX	1024
#define ENG_TRACE_PATH	12

enum eng_node {
	ENG_N_INPUT = 0,
	ENG_N_PARSE,
	ENG_N_PARSE6,
	ENG_N_SESSION,
	ENG_N_SESSION6,
	ENG_N_LB,
	ENG_N_LB6,
	ENG_N_POLICY,
	ENG_N_POLICY6,
	ENG_N_REJECT,
	ENG_N_NAT,
	ENG_N_NAT6,
	ENG_N_ICMP_ERR,
	ENG_N_L2,
	ENG_N_L2_6,
	ENG_N_OUTPUT,
	ENG_N_DROP,
	ENG_N__MAX,
};

extern const char *const eng_node_names[ENG_N__MAX];

/* Why a packet was dropped (or, for REJECTED, answered instead). The names
 * are in eng_reason_names (engine.c), in this order. */
enum eng_reason {
	ENG_R_NONE = 0,
	/* malformed: the frame is not what its headers claim */
	ENG_R_SHORT_FRAME,  /* shorter than Ethernet + IPv4 headers */
	ENG_R_NOT_IPV4,	    /* EtherType is neither IPv4 nor IPv6 */
	ENG_R_IP_VERSION,   /* IPv4 header with version != 4 */
	ENG_R_IP_HDR_LEN,   /* IHL < 5, or the header runs past the frame */
	ENG_R_IP_TOTAL_LEN, /* total length below the header or past the frame */
	ENG_R_IP_CHECKSUM,  /* IPv4 header checksum wrong */
	ENG_R_FRAGMENT,	    /* a fragment: not served by the engine */
	ENG_R_L4_PROTO,	    /* neither TCP nor UDP */
	ENG_R_L4_TRUNCATED, /* TCP/UDP header does not fit the IPv4 packet */
	ENG_R_TCP_HDR_LEN,  /* TCP data offset < 5 or past the packet */
	ENG_R_UDP_LEN,	    /* UDP length below 8 or past the IPv4 packet */
	/* service decisions */
	ENG_R_NO_FRONTEND,	  /* nothing the engine serves: dropped */
	ENG_R_NOT_OPENING,	  /* TCP without SYN of no known flow: dropped */
	ENG_R_REJECTED,		  /* no endpoints: answered (RST / ICMP port unreachable) */
	ENG_R_NO_LOCAL_ENDPOINTS, /* traffic policy Local, none here: dropped */
	ENG_R_NO_SNAT_SOURCE,	  /* no node address towards the backend: dropped */
	ENG_R_NAT_PORTS,	  /* no free SNAT port: dropped */
	ENG_R_SESSION_FULL,	  /* session table full: dropped */
	ENG_R_NO_NEIGHBOUR,	  /* next hop not resolved (yet): dropped */
	ENG_R_TTL,		  /* TTL 0 or 1 on forwarding: dropped */
	ENG_R_RST_NOT_ANSWERED,	  /* a RST to a service without endpoints: dropped */
	ENG_R_TX_FULL,		  /* the output TX ring was full: dropped */
	ENG_R_NO_TX_PORT,	  /* output port has no socket on this queue: dropped */
	ENG_R_ICMP_UNRELATED,	  /* ICMP error quoting no flow of the engine: dropped */
	/* NetworkPolicy (policy.c; the BPF path's drop reasons of the same name) */
	ENG_R_POLICY_DENIED,	 /* a rule denies, or none allows, in an isolated direction */
	ENG_R_POLICY_NO_TABLE,	 /* an isolated endpoint without a rule table: fails closed */
	ENG_R_POLICY_NOT_LOADED, /* policy required, none loaded into the engine yet: fails closed */
	/* IPv6 (ip6-parse) */
	ENG_R_IP6_PAYLOAD_LEN, /* payload length 0 (jumbogram) or past the frame */
	ENG_R_IP6_EXT_HDR,     /* an extension header (or ICMPv6): the kernel path's */
	ENG_R_UDP6_NO_CSUM,    /* UDP over IPv6 without a checksum (RFC 8200 forbids it) */
	ENG_R_POLICY_IPV6, /* a pod isolated by its IPv4 address, at an IPv6 address the ipcache lacks: fails closed */
	ENG_R__MAX,
};

extern const char *const eng_reason_names[ENG_R__MAX];

#define ENG_CT_DIR_FWD	 1
#define ENG_CT_DIR_REPLY 2

struct eng;
struct eng_table;

struct eng_config {
	uint32_t vector;   /* 1..256 */
	uint32_t sessions; /* session entries (each flow takes 2) */
	int	 ct_fd;	   /* BPF conntrack map to mirror sessions into; -1: none */
	int	 ct6_fd;   /* the IPv6 one (bpfproxy_ct6); -1: none */
};

struct eng *eng_create(const struct eng_config *cfg, char *why, size_t whylen);
void	    eng_destroy(struct eng *e);
uint64_t    eng_now_ns(void);

/* ---- tables ---------------------------------------------------------------- */

struct eng_table_info {
	uint32_t generation, ports, frontends, backends, neighbours;
	uint64_t bytes;
};

/* Parse and check a blob; on failure NULL and *why says what is wrong. */
struct eng_table *eng_table_parse(const uint8_t *buf, size_t len, char *why, size_t whylen);
void		  eng_table_free(struct eng_table *t);
void		  eng_table_info(const struct eng_table *t, struct eng_table_info *out);
/* Put t in force (make-before-break): 0, or -1 when older tables still
 * wait for a worker's quiescent point after up to 50 ms more (t is then
 * not taken; retry). */
int eng_set_table(struct eng *e, struct eng_table *t);

/* ---- NetworkPolicy (policy.c) ---------------------------------------------- */

struct eng_policy;

struct eng_policy_info {
	uint32_t generation, isolated, prefixes, endpoints, tables, entries;
	uint32_t epoch;
	uint64_t bytes;
};

/* Parse and check a policy blob (src/dataplane/afxdp/policy.ts); on failure
 * NULL and *why says what is wrong. */
struct eng_policy *eng_policy_parse(const uint8_t *buf, size_t len, char *why, size_t whylen);
void		   eng_policy_free(struct eng_policy *p);
void		   eng_policy_info(const struct eng_policy *p, struct eng_policy_info *out);
/* Put p in force (make-before-break, as tables): 0, or -1 when older
 * policies still wait for a worker's quiescent point (p is then not taken;
 * retry). */
int eng_set_policy(struct eng *e, struct eng_policy *p);
/* Whether traffic must pass a policy: with it set and none loaded yet,
 * the policy node drops (policy-not-loaded) instead of letting through. */
void eng_require_policy(struct eng *e, int on);

/* ---- figures ----------------------------------------------------------------- */

struct eng_node_stats {
	uint64_t calls, vectors, packets, ticks;
};

struct eng_stats {
	struct eng_node_stats  nodes[ENG_N__MAX];
	double		       node_ns[ENG_N__MAX];
	uint64_t	       reasons[ENG_R__MAX];
	uint32_t	       sessions_live, sessions_tombs, sessions_limit;
	uint64_t	       sessions_slots, sessions_bytes;
	int		       sessions_huge;
	uint32_t	       sessions6_live, sessions6_limit;
	uint64_t	       sessions6_bytes;
	int		       ct_mirrored;
	uint64_t	       ct_exported, ct_export_errors, ct_adopted;
	int		       has_table;
	struct eng_table_info  table;
	uint64_t	       swaps;
	uint32_t	       retired;
	uint32_t	       vector;
	int		       policy_required, has_policy;
	struct eng_policy_info policy;
};

void eng_stats(struct eng *e, struct eng_stats *out);

struct eng_trace_rec {
	uint64_t seq;
	uint32_t worker;
	uint8_t	 rx_port, out_port, npath, reason;
	uint8_t	 path[ENG_TRACE_PATH];
	uint8_t	 proto;
	uint32_t in_saddr, in_daddr, out_saddr, out_daddr;
	uint16_t in_sport, in_dport, out_sport, out_dport;
	uint16_t len;
	uint8_t	 sess_dir; /* 0: none */
	uint8_t	 family;   /* 6: the addresses are the ...6 ones */
	uint8_t	 in_saddr6[16], in_daddr6[16], out_saddr6[16], out_daddr6[16];
};

/* Arm tracing of the next n packets (0 disarms; records so far cleared). */
void eng_trace_arm(struct eng *e, int32_t n);
/* Take up to max records (oldest first). */
uint32_t eng_trace_take(struct eng *e, struct eng_trace_rec *out, uint32_t max);

/* Expire sessions (a full sweep); returns entries removed. */
uint32_t eng_gc(struct eng *e, uint64_t now);
void	 eng_clear_sessions(struct eng *e);

/* ---- the test and benchmark entries (api.c) ---------------------------------------- */

/* Run n frames (each in a buffer of ENG_FRAME_SIZE bytes, len[i] used) in
 * vectors of the configured size on the caller's thread, through the graph
 * or up to node `until` (ENG_N__MAX: all of it). Per frame: the node it went
 * to last, the reason (drops, rejects), its output port; len[] updated.
 * Returns 0, or -1 when no table is set. */
int eng_test_run(struct eng *e, uint32_t n, uint8_t *const *data, uint16_t *len,
		 const uint8_t *rx_port, uint64_t now, enum eng_node until, uint8_t *next,
		 uint8_t *reason, uint8_t *port);

struct eng_bench_result {
	uint64_t packets, outputs, drops;
	double	 ns, wall_ns;
};

/* Each round copies the frames into work buffers (not timed) and runs them
 * through the graph `vec` at a time (timed, each vector between two clock
 * reads). fresh: every packet of every round is a new flow (source address
 * low half and port from a counter); otherwise a warm-up round (not timed)
 * opens the flows first. round_ns (rounds entries, or NULL): each round's
 * timed ns, so that a caller on a shared machine can take the rounds no
 * other task interrupted. Returns 0, or -1 when no table is set. */
int eng_bench(struct eng *e, uint32_t nframes, const uint8_t *const *frames, const uint16_t *lens,
	      uint32_t vec, uint32_t rounds, uint8_t rx_port, int fresh,
	      struct eng_bench_result *out, double *round_ns);

/* ---- AF_XDP I/O (xsk.c) -------------------------------------------------------- */

struct eng_io_port {
	uint32_t ifindex;
	uint32_t queues;   /* RX queues bound (0..queues-1) */
	uint32_t xsk_base; /* first XSKMAP slot of this port */
	char	 name[17];
};

struct eng_io_config {
	uint32_t	   nports;
	struct eng_io_port ports[ENG_MAX_PORTS];
	uint32_t	   queues; /* workers: one per queue index */
	uint32_t	   frames; /* UMEM frames per worker */
	uint32_t	   ring;   /* descriptors per ring */
	int		   xsks_fd;
	int		   zerocopy; /* -1 auto, 0 copy, 1 zero-copy */
	int		   busy_poll_us;
};

#define ENG_IO_QUEUE_STATS 16

struct eng_io_port_state {
	uint32_t ifindex;
	int	 zerocopy;
	uint64_t rx, tx, rx_dropped, tx_invalid, rx_ring_full, fill_empty, tx_kicks;
	/* frames received per queue (worker), the first ENG_IO_QUEUE_STATS */
	uint64_t rx_queue[ENG_IO_QUEUE_STATS];
};

int  eng_io_start(struct eng *e, const struct eng_io_config *c, char *why, size_t whylen);
void eng_io_stop(struct eng *e);
/* Per port (summed over queues); returns entries written. */
uint32_t eng_io_ports(struct eng *e, struct eng_io_port_state *out, uint32_t max, uint32_t *queues);
size_t	 eng_io_umem_bytes(struct eng *e);

/* ---- netlink (nl.c) ------------------------------------------------------------ */

struct eng_route {
	uint32_t oif;
	uint32_t gateway; /* net; 0 = on link */
	uint32_t prefsrc; /* net; 0 = none */
	/* IPv6 routes (eng_route_get6): the same, :: = none */
	uint8_t gateway6[16], prefsrc6[16];
};
/* RTM_GETROUTE for one destination: 0 or -errno. */
int eng_route_get(uint32_t dst, struct eng_route *r);
int eng_route_get6(const uint8_t dst[16], struct eng_route *r);
struct eng_neigh_entry {
	uint32_t addr; /* IPv4 (family 4) */
	uint32_t ifindex;
	uint16_t state;
	uint8_t	 mac[6];
	uint8_t	 has_mac;
	uint8_t	 family; /* 4 or 6 */
	uint8_t	 addr6[16];
};
/* RTM_GETNEIGH dump (IPv4 and IPv6): entries written (up to max) or -errno;
 * *total all. */
int eng_neigh_dump(struct eng_neigh_entry *out, uint32_t max, uint32_t *total);
/* Ask the kernel to resolve addr on ifindex (RTM_NEWNEIGH with NTF_USE):
 * ARP, or for IPv6 neighbour discovery. */
int eng_neigh_resolve(uint32_t addr, uint32_t ifindex);
int eng_neigh_resolve6(const uint8_t addr[16], uint32_t ifindex);
/* An interface's MAC and RX queue count (RTM_GETLINK): 0 or -errno. */
int eng_link_info(uint32_t ifindex, uint8_t mac[6], uint32_t *rx_queues, uint32_t *mtu);

#ifdef __cplusplus
}
#endif

#endif /* BPFPROXY_ENGINE_API_H */
