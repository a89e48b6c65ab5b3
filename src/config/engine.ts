/**
 * Which dataplane serves, and the AF_XDP vector engine's settings: agent
 * flags (--dataplane, --afxdp-ifaces, --afxdp-queues, --afxdp-batch), not
 * FelixConfiguration fields (Calico has no such fields). What the engine
 * derives from Config (conntrack lifetimes, session table size) is here
 * too, so nothing else converts.
 */
import type { Config } from './config.js';
import { ctTimeoutsNs, type CtTimeoutsNs } from './datapath.js';

export const DATAPLANES = ['bpf', 'afxdp'] as const;
export type DataplaneKind = (typeof DATAPLANES)[number];

export interface EngineSettings {
  dataplane: DataplaneKind;
  /** --afxdp-ifaces: interfaces the engine takes frames from; null: the uplinks (bpfDataIfacePattern, bpfL3IfacePattern) */
  ifaces: RegExp | null;
  /** --afxdp-queues: RX queues per interface, one worker thread per queue index */
  queues: number;
  /** --afxdp-batch: frames per vector */
  batch: number;
}

export const ENGINE_MAX_QUEUES = 16;
export const ENGINE_MAX_BATCH = 256;

export const DEFAULT_ENGINE_SETTINGS: Readonly<EngineSettings> = Object.freeze({ dataplane: 'bpf', ifaces: null, queues: 1, batch: 256 });

/** "--afxdp-queues 2": 1..16 (the XSKMAP slots an interface gets). */
export function parseQueues(flag: string, s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s.trim()) || n < 1 || n > ENGINE_MAX_QUEUES)
    throw new Error(`${flag} must be a whole number from 1 to ${ENGINE_MAX_QUEUES} (RX queues per interface), not "${s}"`);
  return n;
}

/** "--afxdp-batch 64": 1..256 frames per vector. */
export function parseBatch(flag: string, s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s.trim()) || n < 1 || n > ENGINE_MAX_BATCH)
    throw new Error(`${flag} must be a whole number from 1 to ${ENGINE_MAX_BATCH} (frames per vector), not "${s}"`);
  return n;
}

/** Settings no flag reaches: the engine's own. */
export const ENGINE_BUILT_IN = {
  /**
   * The engine's SNAT source ports: disjoint from the BPF path's
   * (config/datapath.ts, 20000-29999), below NodePorts (30000-32767) and the
   * node's ephemeral range (32768-60999), so the XDP program can tell the
   * engine's replies from everything else.
   */
  snatPorts: [15000, 19999] as const,
  hairpinIp: '169.254.42.1',
  /** the IPv6 one: the BPF path's (bpf/lib/service6.h cfg_hairpin_ip6) */
  hairpinIp6: 'fd62:7078:2a01::1',
  /** UMEM frames per worker (2 KiB each) and descriptors per ring */
  frames: 4096,
  ring: 2048,
} as const;

export interface EngineRuntimeConfig {
  snatPorts: readonly [number, number];
  hairpinIp: string;
  hairpinIp6: string;
  ctTimeoutsNs: CtTimeoutsNs;
  /** session table entries (each flow takes two): the conntrack map's size */
  sessions: number;
  frames: number;
  ring: number;
}

export function engineRuntimeConfig(c: Config): EngineRuntimeConfig {
  return {
    snatPorts: ENGINE_BUILT_IN.snatPorts,
    hairpinIp: ENGINE_BUILT_IN.hairpinIp,
    hairpinIp6: ENGINE_BUILT_IN.hairpinIp6,
    ctTimeoutsNs: ctTimeoutsNs(c.conntrack),
    sessions: c.mapSizes.conntrack,
    frames: ENGINE_BUILT_IN.frames,
    ring: ENGINE_BUILT_IN.ring,
  };
}
