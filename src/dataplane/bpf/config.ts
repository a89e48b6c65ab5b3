/**
 * Datapath settings and their defaults (Calico's FelixConfiguration names
 * and values where Calico has one), parsed from operator input with errors
 * that name the field.
 */
import { DEFAULT_MAGLEV_SEED } from '../../model/maglev.js';

export interface ConntrackTimeouts {
  /** seconds */
  TCPSynSent: number;
  TCPEstablished: number;
  TCPFinsSeen: number;
  TCPResetSeen: number;
  UDPTimeout: number;
}

export interface MapSizes {
  conntrack: number;
  natFrontend: number;
  natBackend: number;
  natAffinity: number;
  /** Maglev table chunks (448 bytes of entries each; bpf/lib/maglev.h); default DEFAULT_MAP_SIZES.maglev */
  maglev?: number;
}

export interface DatapathConfig {
  ctTimeouts: ConntrackTimeouts;
  mapSizes: MapSizes;
  /** Source for SNAT; undefined = the route's preferred source (FIB). */
  snatIp?: string;
  /** Source used when a pod reaches itself through a service. */
  hairpinIp: string;
  snatPorts: [number, number];
  /** Forward translated packets from BPF (FIB lookup + redirect). */
  fibRedirect: boolean;
  /** Seed of the Maglev flow hash; the same on every node, and the one the tables are built with. */
  maglevSeed: number;
}

export const DEFAULT_CT_TIMEOUTS: ConntrackTimeouts = {
  TCPSynSent: 20,
  TCPEstablished: 3600,
  TCPFinsSeen: 30,
  TCPResetSeen: 40,
  UDPTimeout: 60,
};

export const DEFAULT_MAP_SIZES: Required<MapSizes> = {
  conntrack: 512000,
  natFrontend: 65536,
  natBackend: 262144,
  natAffinity: 65536,
  // 64 MiB at most (512 bytes a chunk in the kernel): 10K services of up to
  // 5 backends each with the default sizing (src/model/maglev.ts)
  maglev: 131072,
};

export const DEFAULT_DATAPATH: DatapathConfig = {
  ctTimeouts: DEFAULT_CT_TIMEOUTS,
  mapSizes: DEFAULT_MAP_SIZES,
  hairpinIp: '169.254.42.1',
  snatPorts: [20000, 29999],
  fibRedirect: true,
  maglevSeed: DEFAULT_MAGLEV_SEED,
};

/** "20s", "1h", "1m30s", "250ms" or a bare number of seconds. */
export function parseDuration(s: string, field: string): number {
  const t = s.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let m: RegExpExecArray | null;
  let used = 0;
  while ((m = re.exec(t)) !== null) {
    const n = Number(m[1]);
    total += m[2] === 'ms' ? n / 1000 : m[2] === 's' ? n : m[2] === 'm' ? n * 60 : n * 3600;
    used = re.lastIndex;
  }
  if (used !== t.length || t.length === 0) {
    throw new Error(`${field}: "${s}" is not a duration (examples: 20s, 1h, 1m30s)`);
  }
  return total;
}

/**
 * Calico's bpfConntrackTimeouts as "Key=duration,Key=duration". TCPFinsSeen
 * "Auto" keeps the default.
 */
export function parseCtTimeouts(s: string, base = DEFAULT_CT_TIMEOUTS): ConntrackTimeouts {
  const out = { ...base };
  if (!s.trim()) return out;
  for (const part of s.split(',')) {
    const [k, v] = part.split('=').map((x) => x.trim());
    if (!k || v === undefined) throw new Error(`conntrack timeouts: "${part}" is not Key=duration`);
    if (!(k in out)) {
      throw new Error(`conntrack timeouts: unknown key ${k} (known: ${Object.keys(out).join(', ')})`);
    }
    if (v === 'Auto') continue;
    const secs = parseDuration(v, `conntrack timeouts ${k}`);
    if (secs <= 0) throw new Error(`conntrack timeouts ${k}: must be more than 0`);
    out[k as keyof ConntrackTimeouts] = secs;
  }
  return out;
}
