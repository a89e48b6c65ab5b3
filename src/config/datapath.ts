/**
 * The one place the BPF datapath's settings are derived from Config: what
 * the loader writes into the programs' rodata (in the rodata's units) and
 * the map sizes it creates the maps with. dataplane/bpf/loader.ts writes
 * DatapathConfig out as it is (rodataFor); nothing else converts.
 */
import type { Config, ConnectTimeLb, ConntrackTimeouts, MapSizes } from './config.js';
import { DEFAULT_CONFIG } from './fields.js';
import { DEFAULT_MAGLEV_SEED } from '../model/maglev.js';

/** The programs' `const volatile __u64 cfg_ct_*_ns` (bpf/lib/config.h), ns. */
export interface CtTimeoutsNs {
  synSent: bigint;
  established: bigint;
  finsSeen: bigint;
  rstSeen: bigint;
  udp: bigint;
}

/** The maps' sizes: the FelixConfiguration's, and bpfproxy's own. */
export interface DatapathMapSizes extends MapSizes {
  /**
   * Maglev table chunks (448 bytes of entries each; bpf/lib/maglev.h): 64 MiB
   * at most (512 bytes a chunk in the kernel), 10K services of up to 5
   * endpoints each with the default sizing (src/model/maglev.ts).
   */
  maglev?: number;
}

export interface DatapathConfig {
  ctTimeoutsNs: CtTimeoutsNs;
  mapSizes: DatapathMapSizes;
  /** cfg_snat_ip: source for SNAT; undefined = the route's preferred source (FIB) */
  snatIp?: string;
  /** cfg_hairpin_ip: source used when a pod reaches itself through a service */
  hairpinIp: string;
  /** cfg_snat_port_min, cfg_snat_port_max */
  snatPorts: [number, number];
  /** cfg_fib_redirect: forward translated packets from BPF (FIB lookup + redirect) */
  fibRedirect: boolean;
  /** cfg_maglev_seed: the Maglev flow hash's seed; the same on every node, and the one the tables are built with */
  maglevSeed: number;
  /** cfg_sock_netns_cookie: socket LB only for sockets of this network namespace (--socket-lb=host: the node's); undefined = every namespace */
  sockNetnsCookie?: bigint;
  /** cfg_sock_set_retval: refused connects read ECONNREFUSED (bpf_set_retval, 5.18) rather than EPERM; undefined = probe the kernel */
  sockSetRetval?: boolean;
  /** cfg_sock_protos: which sockets the socket LB translates (bpfConnectTimeLoadBalancing) */
  sockProtos: { tcp: boolean; udp: boolean };
}

/** Settings no FelixConfiguration field reaches: bpfproxy's own. */
/** Maglev table chunks when DatapathMapSizes.maglev is not given. */
export const DEFAULT_MAGLEV_CHUNKS = 131_072;

const BUILT_IN = {
  hairpinIp: '169.254.42.1',
  snatPorts: [20000, 29999],
  fibRedirect: true,
  maglevSeed: DEFAULT_MAGLEV_SEED,
  maglevChunks: DEFAULT_MAGLEV_CHUNKS,
} as const;

const ns = (ms: number): bigint => BigInt(Math.round(ms * 1e6));

export const ctTimeoutsNs = (t: ConntrackTimeouts): CtTimeoutsNs => ({
  synSent: ns(t.tcpSynSent),
  established: ns(t.tcpEstablished),
  finsSeen: ns(t.tcpFinsSeen),
  rstSeen: ns(t.tcpResetSeen),
  udp: ns(t.udpTimeout),
});

/** bpfConnectTimeLoadBalancing: TCP (Calico's default), Enabled (TCP and UDP), Disabled (neither). */
export const sockProtos = (m: ConnectTimeLb): { tcp: boolean; udp: boolean } => ({ tcp: m !== 'Disabled', udp: m === 'Enabled' });

export function datapathConfig(c: Config): DatapathConfig {
  return {
    ctTimeoutsNs: ctTimeoutsNs(c.conntrack),
    mapSizes: { ...c.mapSizes, maglev: BUILT_IN.maglevChunks },
    hairpinIp: BUILT_IN.hairpinIp,
    snatPorts: [...BUILT_IN.snatPorts],
    fibRedirect: BUILT_IN.fibRedirect,
    sockProtos: sockProtos(c.connectTimeLb),
    maglevSeed: BUILT_IN.maglevSeed,
  };
}

/** Calico's defaults, as the datapath takes them. */
export const DEFAULT_DATAPATH: Readonly<DatapathConfig> = datapathConfig(DEFAULT_CONFIG);

/** The interfaces the attacher treats as uplinks: bpfDataIfacePattern or bpfL3IfacePattern. */
export function uplinkIfaces(c: Config): RegExp {
  return c.l3Ifaces ? new RegExp(`(${c.dataIfaces.source})|(${c.l3Ifaces.source})`) : c.dataIfaces;
}
