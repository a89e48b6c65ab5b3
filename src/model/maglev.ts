/**
 * Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
 * Software Network Load Balancer", NSDI 2016, section 3.4): a lookup table
 * of a prime size M in which every backend owns about M/N entries, such
 * that adding or removing one backend moves little more than the entries
 * that backend gains or loses. A new flow takes table[hash(5-tuple) % M].
 *
 * Every node must build the same table from the same backends, and hash a
 * flow the same way, so that a flow whose packets move to another ingress
 * node (ECMP, a node going away) finds the same backend there. Both hashes
 * are therefore fixed here, with a fixed seed, and written down:
 *
 *  - Backend permutation: SHA-256 over the seed (4 bytes, big-endian) and
 *    the backend's "ip:port" (UTF-8); offset = first 4 bytes (big-endian)
 *    mod M, skip = next 4 bytes mod (M - 1) + 1. Backends fill the table in
 *    the order of their "ip:port" strings (UTF-16 code unit order), so the
 *    order they are given in does not matter.
 *  - Flow hash: the Linux kernel's jhash2 (lookup3) over four 32-bit words
 *    in host order: source address, destination address,
 *    (source port << 16) | destination port, IP protocol; initval = the
 *    seed. bpf/lib/maglev.h computes the same, byte order independent.
 *
 * The table size M is taken from MAGLEV_TABLE_SIZES by backend count (see
 * maglevTableSize): a table is the same on every node as long as its
 * backends are, and a flow keeps its backend across a change of backends
 * only while M stays the same.
 */
import { createHash } from 'node:crypto';

/** The seed both hashes use when nothing else is configured ("bpx1"). */
export const DEFAULT_MAGLEV_SEED = 0x62707831;

/**
 * Table sizes: primes just under powers of two (the list Cilium uses,
 * pkg/maglev), at most 65521 because a size is a u16 in struct fe_value.
 * Near-doubling steps: a service changes table size (and every flow's
 * entry) only when its backend count crosses a step.
 */
export const MAGLEV_TABLE_SIZES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521] as const;

/**
 * Entries per backend the sizing aims at. Maglev moves more than the 1/N of
 * flows a removed backend had: with 100 entries a backend (Cilium's
 * guidance) 1.5-3% more; with 700 at most 1% more over 2-200 backends
 * (test/maglev.test.ts measures it), which is the goal.
 */
export const MAGLEV_ENTRIES_PER_BACKEND = 700;

export interface MaglevSizing {
  /**
   * Backend counts above this get no bigger table (FelixConfiguration
   * bpfMaglevMaxEndpointsPerService; Calico's default 100).
   */
  maxEndpointsPerService: number;
  /** Entries per backend aimed at (MAGLEV_ENTRIES_PER_BACKEND). */
  entriesPerBackend: number;
}

export const DEFAULT_MAGLEV_SIZING: MaglevSizing = { maxEndpointsPerService: 100, entriesPerBackend: MAGLEV_ENTRIES_PER_BACKEND };

/**
 * The table size for n backends: the smallest listed size with at least
 * entriesPerBackend entries per backend (counting at most
 * maxEndpointsPerService backends), and never less than n (every backend
 * gets an entry). Undefined when n is more than the largest size (no
 * table: the frontend stays random). Defaults: 1021 for 1 backend, 2039
 * for 2, 4093 for 3-5, 8191 for 6-11, 16381 for 12-23, 32749 for 24-46,
 * 65521 from 47.
 */
export function maglevTableSize(n: number, s: MaglevSizing = DEFAULT_MAGLEV_SIZING): number | undefined {
  const largest = MAGLEV_TABLE_SIZES[MAGLEV_TABLE_SIZES.length - 1]!;
  if (!(n >= 1) || n > largest) return undefined;
  const want = Math.max(Math.min(s.entriesPerBackend * Math.min(n, s.maxEndpointsPerService), largest), n);
  return MAGLEV_TABLE_SIZES.find((m) => m >= want) ?? largest;
}

const seedBytes = (seed: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(seed >>> 0);
  return b;
};

/** The two permutation hashes of one backend, before reduction by M. */
export function backendHashes(name: string, seed = DEFAULT_MAGLEV_SEED): [number, number] {
  const d = createHash('sha256').update(seedBytes(seed)).update(name, 'utf8').digest();
  return [d.readUInt32BE(0), d.readUInt32BE(4)];
}

/** Sentinel of an unfilled entry while building (ordinals are < 65521). */
const EMPTY = 0xffff;

/**
 * The lookup table for these backends ("ip:port" each, distinct): entry i
 * is the index in `backends` of the backend that owns position i. `m`
 * must be one of MAGLEV_TABLE_SIZES and at least backends.length.
 */
export function maglevTable(backends: readonly string[], m: number, seed = DEFAULT_MAGLEV_SEED): Uint16Array {
  const n = backends.length;
  if (!(MAGLEV_TABLE_SIZES as readonly number[]).includes(m)) {
    throw new Error(`Maglev table size ${m} is not one of ${MAGLEV_TABLE_SIZES.join(', ')}`);
  }
  if (n === 0 || n > m) throw new Error(`a Maglev table of ${m} entries cannot hold ${n} backends`);
  const order = backends.map((_, i) => i).sort((a, b) => (backends[a]! < backends[b]! ? -1 : backends[a]! > backends[b]! ? 1 : 0));
  for (let k = 1; k < n; k++) {
    if (backends[order[k]!] === backends[order[k - 1]!])
      throw new Error(`Maglev backends must be distinct: ${backends[order[k]!]} is listed twice`);
  }
  // pos[k]: where backend order[k] tries next; it walks offset, offset+skip, ... mod m
  const pos = new Uint32Array(n);
  const skip = new Uint32Array(n);
  for (let k = 0; k < n; k++) {
    const [h1, h2] = backendHashes(backends[order[k]!]!, seed);
    pos[k] = h1 % m;
    skip[k] = (h2 % (m - 1)) + 1;
  }
  const table = new Uint16Array(m).fill(EMPTY);
  let filled = 0;
  for (;;) {
    for (let k = 0; k < n; k++) {
      let c = pos[k]!;
      const s = skip[k]!;
      while (table[c] !== EMPTY) {
        c += s;
        if (c >= m) c -= m;
      }
      table[c] = order[k]!;
      c += s;
      pos[k] = c >= m ? c - m : c;
      if (++filled === m) return table;
    }
  }
}

/** A flow as the hash sees it: addresses dotted quad, ports and protocol numbers. */
export interface FlowTuple {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
}

const ipWord = (ip: string): number => {
  const p = ip.split('.');
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
};
const rol32 = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

/** The kernel's jhash2() over 32-bit words (include/linux/jhash.h). */
export function jhash2(words: readonly number[], initval: number): number {
  let a = (0xdeadbeef + (words.length << 2) + initval) >>> 0;
  let b = a;
  let c = a;
  let i = 0;
  let len = words.length;
  while (len > 3) {
    a = (a + words[i]!) >>> 0;
    b = (b + words[i + 1]!) >>> 0;
    c = (c + words[i + 2]!) >>> 0;
    // __jhash_mix
    a = (a - c) >>> 0;
    a = (a ^ rol32(c, 4)) >>> 0;
    c = (c + b) >>> 0;
    b = (b - a) >>> 0;
    b = (b ^ rol32(a, 6)) >>> 0;
    a = (a + c) >>> 0;
    c = (c - b) >>> 0;
    c = (c ^ rol32(b, 8)) >>> 0;
    b = (b + a) >>> 0;
    a = (a - c) >>> 0;
    a = (a ^ rol32(c, 16)) >>> 0;
    c = (c + b) >>> 0;
    b = (b - a) >>> 0;
    b = (b ^ rol32(a, 19)) >>> 0;
    a = (a + c) >>> 0;
    c = (c - b) >>> 0;
    c = (c ^ rol32(b, 4)) >>> 0;
    b = (b + a) >>> 0;
    len -= 3;
    i += 3;
  }
  if (len === 0) return c;
  if (len >= 3) c = (c + words[i + 2]!) >>> 0;
  if (len >= 2) b = (b + words[i + 1]!) >>> 0;
  a = (a + words[i]!) >>> 0;
  // __jhash_final
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 14)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol32(c, 11)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol32(a, 25)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 16)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol32(c, 4)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol32(a, 14)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 24)) >>> 0;
  return c;
}

/** The flow hash the datapath computes (bpf/lib/maglev.h maglev_flow_hash()). */
export function maglevFlowHash(t: FlowTuple, seed = DEFAULT_MAGLEV_SEED): number {
  return jhash2([ipWord(t.saddr), ipWord(t.daddr), (((t.sport & 0xffff) << 16) | (t.dport & 0xffff)) >>> 0, t.proto & 0xff], seed >>> 0);
}
