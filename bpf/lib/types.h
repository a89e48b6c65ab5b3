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

/* The IPv4 address of the pod behind a pod interface (key struct
 * pod_if_key): the agent writes the address of a /32 route that points at
 * it. IPv6 network policy (lib/policy6.h) reads that address's ipcache
 * entry to know whether the pod is isolated when an IPv6 address of the
 * pod is not in bpfproxy_ipcache6 (fail closed). */
struct pod_addr {
	__be32 addr4; /* net */
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
	CT_F_SNAT	= 1 << 0, /* source rewritten (eTP=Cluster remote, hairpin) */
	CT_F_HAIRPIN	= 1 << 1, /* client is its own backend */
	CT_F_EXTERNAL	= 1 << 2, /* created by traffic from a data interface */
	CT_F_HOST_BE	= 1 << 3, /* the backend is this node itself (host network):
				 * its replies leave through the TC egress hook */
	CT_F_PLAIN	= 1 << 4, /* no translation: tracked for network policy only
				 * (a flow with an isolated endpoint on this node);
				 * the nat_* fields repeat the entry's own tuple */
	CT_F_POL_DENIED = 1 << 5, /* the policy check at pol_gen denied the flow */
	CT_F_ADOPTED	= 1 << 6, /* copied from the kernel's conntrack at takeover
				 * (a flow kube-proxy's rules NAT'd) */
	CT_F_TUNNEL	= 1 << 7, /* carried in VXLAN between nodes: bpfproxy_ct_tun
				 * says how (lib/tunnel.h) */
};

/* Where the XDP program (lib/xdp.h) or the TC hooks (lib/fib.h) sent this
 * direction's packets after their FIB lookup, so that the next packets of
 * the flow need none: reused for about a second (FWD_CACHE_LIFE), for
 * packets no longer than one the route took, each hook reading only what
 * it wrote itself. An entry the agent writes carries zeros: nothing
 * cached. In struct ct_value and struct ct6_value (lib/types6.h). */
struct ct_fwd {
	__u32 stamp;	 /* host: bpf_ktime_get_ns() >> FWD_CACHE_SHIFT when filled */
	__u32 ifindex;	 /* host: egress interface; 0 = nothing cached */
	__u16 max_len;	 /* host: the longest IPv4 total / IPv6 length the route took */
	__u8  where;	 /* enum xdp_where (lib/xdp.h), or FWD_TC_* (lib/fib.h) */
	__u8  ttl_check; /* 1: a TTL of 1 or less goes to the stack */
	__u8  dmac[6];
	__u8  smac[6];
};

/* One entry per direction. Packets matching key are rewritten to
 * (nat_saddr:nat_sport -> nat_daddr:nat_dport); the entry of the other
 * direction is keyed by the reverse of that rewritten tuple. The two are
 * created together, live as long as either is fresh and are removed
 * together (lib/conntrack.h, the agent's GC). */
struct ct_value {
	__u64	      expires_ns; /* host: bpf_ktime_get_ns() deadline */
	__u64	      created_ns; /* host */
	__be32	      nat_saddr;  /* net */
	__be32	      nat_daddr;  /* net */
	__be16	      nat_sport;  /* net */
	__be16	      nat_dport;  /* net */
	__u8	      dir;	  /* enum ct_dir */
	__u8	      state;	  /* enum ct_state_bits */
	__u8	      flags;	  /* enum ct_flags */
	__u8	      pad;
	__u32	      svc_id;  /* host */
	__u32	      pol_gen; /* host: policy generation the flow was checked at
			 * (lib/policy.h); 0 = never checked. Both halves
			 * carry it, with CT_F_POL_DENIED. */
	struct ct_fwd fwd;     /* the hooks' forwarding cache; the agent writes zeros */
};

/* ---- network policy (lib/policy.h) ------------------------------------- */

/* Address -> identity, longest prefix first: each local endpoint's
 * addresses (/32), the prefixes policies name (ipBlock cidr and except),
 * the node's addresses (HOST) and 0.0.0.0/0 (WORLD). An address no entry
 * covers is WORLD. */
struct ipcache_key {
	__u32  prefixlen; /* host: 0..32 */
	__be32 addr;	  /* net */
};

enum ipcache_flags {
	IPC_F_INGRESS_ISO = 1 << 0, /* local endpoint selected by an Ingress policy */
	IPC_F_EGRESS_ISO  = 1 << 1, /* local endpoint selected by an Egress policy */
};

struct ipcache_value {
	__u32 identity; /* host: IDENTITY_* or one the agent interned */
	__u32 endpoint; /* host: local endpoint id (key of bpfproxy_policy); 0 = not local */
	__u8  flags;	/* enum ipcache_flags; local endpoints only */
	__u8  pad[3];
};

/* Reserved identities (the agent's src/model/policy/compiled.ts). */
enum pol_identity {
	IDENTITY_ANY	= 0, /* in a rule key: any peer */
	IDENTITY_WORLD	= 1,
	IDENTITY_HOST	= 2, /* this node: always let into its pods */
	IDENTITY_WORLD6 = 3, /* IPv6 addresses no more specific entry claims (::/0) */
};

enum pol_dir {
	POL_DIR_INGRESS = 1, /* into the endpoint, from the peer */
	POL_DIR_EGRESS	= 2, /* from the endpoint, to the peer */
};

enum pol_verdict {
	POL_ALLOW = 1,
	POL_DENY  = 2,
};

/* Key of an endpoint's rule table (an LPM trie per endpoint, inner map of
 * bpfproxy_policy). prefixlen counts the bits after it: 40 = identity and
 * direction (any protocol, any port); 48 + n = also the protocol and the
 * first n bits of the port (an endPort range is a few such prefixes). The
 * identity is always matched whole; IDENTITY_ANY matches any peer (a
 * second lookup). */
struct pol_key {
	__u32  prefixlen; /* host: 40, or 48..64 */
	__be32 identity;  /* net */
	__u8   dir;	  /* enum pol_dir */
	__u8   proto;	  /* IPPROTO_*; 0 when prefixlen is 40 */
	__be16 port;	  /* net: big-endian, so a port range is a bit prefix */
};

struct pol_value {
	__u32 rule_id; /* host: index of the rule (bpfproxy_pol_hits, bpfproxy_pol_rules) */
	__u8  verdict; /* enum pol_verdict */
	__u8  pad[3];
};

/* The one entry of bpfproxy_pol_state. */
struct pol_state {
	__u32 generation; /* host: moves on whenever a decision may change; never 0 */
	__u32 isolated;	  /* host: local endpoints isolated in a direction; 0 = no
			   * policy anywhere, and the programs skip it */
};

/* Per-CPU, indexed by rule id: decisions a rule took (new flows and
 * re-checks; packets of a flow whose decision is cached are not counted). */
struct rule_hits {
	__u64 hits; /* host */
};

/* Rule and endpoint names for operators (CLI) and for adoption after a
 * restart; never read by the datapath. "namespace/name" of a NetworkPolicy
 * or a pod is at most 63 + 1 + 253 bytes. */
#define POL_NAME_BYTES 320
struct pol_rule_name {
	char  policy[POL_NAME_BYTES]; /* "namespace/name", NUL padded */
	__u32 index;		      /* host: index in spec.ingress / spec.egress */
	__u8  dir;		      /* enum pol_dir */
	__u8  pad[3];
};

struct pol_ep_name {
	char pod[POL_NAME_BYTES]; /* "namespace/name", NUL padded */
};

/* ---- runtime mode (lib/mode.h) ----------------------------------------- */

enum mode_flags {
	MODE_F_DRAIN   = 1 << 0, /* handing back: serve flows in conntrack, pass new ones */
	MODE_F_STANDBY = 1 << 1, /* taking over: attached, but every packet passes untouched */
};

/* The one entry of bpfproxy_mode: what the programs do now, set by the
 * agent while they run (load-time settings are in lib/config.h). */
struct mode_value {
	__u32 flags; /* host: enum mode_flags */
	__u32 pad;
};

/* ---- counters (lib/drop.h) --------------------------------------------- */

/* Per-CPU, indexed by enum reason. */
struct reason_counter {
	__u64 packets; /* host */
	__u64 bytes;   /* host */
};

/* ---- monitor (lib/monitor.h) ------------------------------------------- */

enum monitor_type {
	MON_FLOW_NEW   = 1, /* a service flow was created (both conntrack entries written) */
	MON_FLOW_CLOSE = 2, /* a service flow saw a RST, or FINs both ways */
	MON_DROP       = 3, /* a packet counted under a reason (enum reason) */
	MON_POLICY     = 4, /* a policy verdict */
};

/* Which program saw the packet; 0 where the place that emits does not know
 * (drops: the interface says it). */
enum monitor_hook {
	MON_HOOK_POD  = 1, /* TC ingress, pod-facing interface */
	MON_HOOK_DATA = 2, /* TC ingress, data interface */
	MON_HOOK_HOST = 3, /* TC egress, replies of host-network endpoints */
};

enum monitor_close {
	MON_CLOSE_FIN = 1,
	MON_CLOSE_RST = 2,
};

enum monitor_verdict {
	MON_VERDICT_ALLOW = 1,
	MON_VERDICT_DENY  = 2,
};

enum monitor_direction {
	MON_DIR_INGRESS = 1, /* into the endpoint */
	MON_DIR_EGRESS	= 2, /* out of the endpoint */
};

/* Bytes of the frame an event carries (Ethernet + IPv4 + TCP with options
 * fit in most cases), for pcap. */
#define MONITOR_SNAP_LEN 128
/* Monitors that can listen at once, each with a ring buffer of its own. */
#define MONITOR_SLOTS 4
/* Size of each monitor's ring buffer (a power of 2, a multiple of the page). */
#define MONITOR_RING_BYTES (4U << 20)

/* One event in a monitor's ring buffer. */
struct monitor_event {
	__u64 ts_ns; /* host: bpf_ktime_get_ns() */
	__u8  type;  /* enum monitor_type */
	__u8  hook;  /* enum monitor_hook, 0: unknown */
	/* DROP: enum reason; FLOW_CLOSE: enum monitor_close;
	 * POLICY: enum monitor_verdict */
	__u8 code;
	/* FLOW_*: enum ct_flags; DROP: 1 = dropped, 0 = handled otherwise
	 * (rejected, answered, passed: by reason); POLICY: enum monitor_direction */
	__u8	      flags;
	__u32	      ifindex;	   /* host: skb->ingress_ifindex, or skb->ifindex on egress */
	struct ct_key tuple;	   /* the packet as it came (FLOW_CLOSE: the client's side);
				* DROP: read again from the frame, zero if unreadable */
	struct ct_key nat;	   /* FLOW_*: the client's tuple after translation */
	__u32	      svc_id;	   /* host: FLOW_*: service port (svc_names) */
	__u32	      rule_id;	   /* host: POLICY */
	__u32	      endpoint;	   /* host: POLICY: the local endpoint */
	__u32	      pkt_len;	   /* host: skb->len */
	__u64	      duration_ns; /* host: FLOW_CLOSE: since the flow was created */
	__u16	      cap_len;	   /* host: bytes of data[] captured */
	__u8	      family;	   /* 4 or 6; 0: a DROP of a frame of neither (tuple zero) */
	__u8	      pad[5];
	__u8	      data[MONITOR_SNAP_LEN]; /* the frame's first cap_len bytes */
	/* Family 6: the addresses (net), the tuples' saddr/daddr left zero
	 * (their ports and proto as for IPv4). Appended, so the IPv4 fields
	 * keep their offsets; zero for family 4. */
	__be32 saddr6[4];     /* tuple */
	__be32 daddr6[4];     /* tuple */
	__be32 nat_saddr6[4]; /* nat */
	__be32 nat_daddr6[4]; /* nat */
};

/* A listening monitor's claim on a slot: the CLI writes it (atomically,
 * through mmap) and renews until_ns every second; a monitor that died
 * stops receiving when its lease runs out. */
struct monitor_slot {
	__u64 owner;	/* host: the monitor's token, 0: free */
	__u64 until_ns; /* host: its lease, against bpf_ktime_get_ns() */
};

/* The one entry of bpfproxy_monitor_ctl (an mmapable array). */
struct monitor_ctl {
	/* host: events are emitted while bpf_ktime_get_ns() < until_ns: the
	 * newest lease of any slot; 0 when nobody listens (the check the
	 * datapath makes, once per event it could emit) */
	__u64		    until_ns;
	struct monitor_slot slot[MONITOR_SLOTS];
};

/* ---- trace (lib/trace.h) ------------------------------------------------ */

/* What a program loaded in trace mode records at each decision. Words are
 * host order; addresses (marked "net") as on the wire. */
enum trace_kind {
	TRACE_CT_HIT  = 1, /* b: dir, state, flags; w: svc_id, nat saddr (net), nat daddr (net),
				* nat sport, nat dport */
	TRACE_CT_MISS = 2,
	/* b: 6: an IPv6 frontend (backends in bpfproxy_slots6), else 0;
	 * w: svc_id, set_id, cluster_count, local_count, flags | affinity_timeout << 16 */
	TRACE_FRONTEND	  = 3,
	TRACE_NO_FRONTEND = 4,
	TRACE_BACKEND =
		5, /* b: enum reason (0: chosen), local_only, backend flags; w: addr (net), port */
	TRACE_NAT    = 6, /* b: ct flags; w: saddr (net), sport, daddr (net), dport */
	TRACE_FIB    = 7, /* b: 1 = looked up; w: rc (s32), ifindex, mtu */
	TRACE_REASON = 8, /* b: enum reason, 1 = dropped */
	TRACE_POLICY =
		9, /* b: enum monitor_verdict, enum monitor_direction; w: rule_id, endpoint */
	/* IPv6: the CT_HIT, BACKEND and NAT steps carry 0 for each address;
	 * ADDR6 steps follow, one per address, in the order of the step's
	 * address words. b: 0; w: address (net, 4 words), port (host) */
	TRACE_ADDR6 = 10,
};

#define TRACE_MAX_STEPS 16

struct trace_step {
	__u8  kind; /* enum trace_kind */
	__u8  b[3];
	__u32 w[5];
};

/* The one entry of bpfproxy_trace: the steps of the last traced packet. */
struct trace_buf {
	__u32		  count; /* host: steps recorded (more are not) */
	__u32		  pad;
	struct trace_step step[TRACE_MAX_STEPS];
};

/* ---- external traffic to other nodes: Tunnel and DSR (lib/tunnel.h) ----- */

/* An endpoint on another node (bpfproxy_tun_eps key). */
struct tun_ep_key {
	__be32 addr; /* net */
};

struct tun_ep {
	__be32 node; /* net: its node's InternalIP, the tunnel destination */
};

/* bpfDSROptoutCIDRs (LPM on the client address). Value unused (1). */
struct dsr_optout_key {
	__u32  prefixlen; /* host: 0..32 */
	__be32 addr;	  /* net */
};

/* bpfExternalServiceMode: how new external flows to an endpoint on another
 * node are carried. */
enum ext_mode {
	EXT_M_SNAT   = 0, /* SNAT to this node (kube-proxy); also when unset */
	EXT_M_TUNNEL = 1, /* VXLAN to the endpoint's node, reply back the same way */
	EXT_M_DSR    = 2, /* VXLAN to the endpoint's node, reply straight to the client */
};

/* The one entry of bpfproxy_tun_cfg, written by the agent while the
 * programs run. */
struct tun_cfg {
	__u32  mode;  /* host: enum ext_mode */
	__be32 local; /* net: this node's InternalIP (outer source); 0 = no tunnel */
};

enum tun_role {
	TUN_R_INGRESS = 1, /* this node tunnelled the flow to the backend's node */
	TUN_R_BACKEND = 2, /* this node received it and translated it to a local endpoint */
};

/* How a tunnelled flow is carried (bpfproxy_ct_tun, keyed by each of its
 * two conntrack keys). */
struct ct_tun {
	__be32 peer;	/* net: the other node (ingress: backend's node; backend: ingress node) */
	__be32 local;	/* net: this node's tunnel address for the flow */
	__be32 backend; /* net: endpoint address (the ingress node's choice, or ours) */
	__be16 backend_port; /* net */
	__u8   role;	     /* enum tun_role */
	__u8   mode;	     /* enum ext_mode: EXT_M_TUNNEL or EXT_M_DSR */
};

/* Per-CPU tunnel counters (bpfproxy_tun_stats), struct reason_counter each. */
enum tun_counter {
	TUN_C_ENCAP	 = 0, /* packets encapsulated and sent */
	TUN_C_DECAP	 = 1, /* tunnel packets accepted and decapsulated */
	TUN_C_DSR_REPLY	 = 2, /* replies sent straight to the client */
	TUN_C_NEW_SNAT	 = 3, /* new external flows to another node's endpoint, SNATed */
	TUN_C_NEW_TUNNEL = 4, /* ... tunnelled, reply through this node */
	TUN_C_NEW_DSR	 = 5, /* ... tunnelled, reply direct */
	TUN_C_NEW_REMOTE = 6, /* new flows arriving through the tunnel to a local endpoint */
	TUN_C_MOVED	 = 7, /* backend node: a tunnelled flow's client packets came another way;
			       * its replies follow (lib/tunnel_svc.h tun_follow_ingress()) */
	TUN_C_MIDFLOW	 = 8, /* mid-flow TCP packets of no known flow to a Maglev frontend, taken
			       * as new flows (lib/service.h svc_midflow_adoptable()) */
};
#define TUN_COUNTERS 9

/* Socket-level load balancing (bpf/sock.c): what a socket reached through
 * a service, for the reverse translation of its UDP replies and of
 * getpeername(). */
struct sock_rev_key {
	__u64  cookie; /* host: bpf_get_socket_cookie() */
	__be32 addr;   /* net: the backend */
	__be16 port;   /* net */
	__u8   proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8   pad;
};

struct sock_rev_value {
	__be32 addr; /* net: the service address the socket addressed */
	__be16 port; /* net */
	__u16  pad;
	__u32  svc_id; /* host */
};

/* bpfproxy_sock_stats indices (src/dataplane/bpf/sock.ts SOCK_STATS, same order). */
enum sock_stat {
	SOCK_STAT_CONNECT = 0, /* connect() to a service: translated */
	SOCK_STAT_SENDMSG,     /* UDP sendmsg() to a service: translated */
	SOCK_STAT_RECVMSG,     /* UDP reply: source read as the service */
	SOCK_STAT_GETPEERNAME, /* getpeername(): the service address */
	SOCK_STAT_REFUSED,     /* a service without endpoints: ECONNREFUSED */
	SOCK_STAT_NO_LOCAL,    /* traffic policy Local, none on this node: ECONNREFUSED */
	SOCK_STAT_LEFT_TO_TC,  /* loadBalancerSourceRanges or draining: the TC path decides */
	SOCK_STAT_REV_FULL,    /* reverse map update failed: left to the TC path */
	__SOCK_STAT_MAX,
};

#endif /* BPFPROXY_TYPES_H */
