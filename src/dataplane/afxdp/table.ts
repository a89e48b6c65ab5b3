/**
 * The vector engine's desired state as one binary blob (the layout
 * addon/engine/table.c parses and checks, field by field): ports, node
 * addresses, frontends with their backends and Maglev tables, neighbours,
 * and the settings the engine's decisions need. Built whole on every change
 * and swapped in at once by the engine (make-before-break). Both families:
 * IPv6 node addresses, frontends (with their backends) and neighbours go
 * in sections of their own after the IPv4 ones (version 3).
 */
import { isIPv4, isIPv6 } from '../../net/ip.js';
import { writeIpv6 } from '../../net/ip6.js';

export const TABLE_MAGIC = 0x45585042; // "BPXE"
export const TABLE_VERSION = 3;
const HDR = 128;
const ADDR6 = 16;
const FE6 = 48;
const BE6 = 20;
const NEIGH6 = 40;
const PORT = 32;
const ADDR = 4;
const FE = 32;
const BE = 8;
const NEIGH = 16;
const MAGLEV = 2;

/** Frontend flags, as bpf/lib/types.h enum fe_flags. */
export const EngineFeFlags = { EXTERNAL: 1, EXT_LOCAL: 2, INT_LOCAL: 4, NODEPORT: 8, MAGLEV: 16 } as const;
export const ENGINE_PORT_POD = 1;

export interface EnginePort {
  ifindex: number;
  name: string;
  /** "02:00:00:00:00:01" */
  mac: string;
  /** pod-facing: traffic from it is internal (internalTrafficPolicy) */
  pod: boolean;
}

export interface EngineBackend {
  ip: string;
  port: number;
  local: boolean;
}

export interface EngineFrontend {
  /** 0.0.0.0 (IPv6: ::): NodePort, any node address of its family */
  ip: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  /** EngineFeFlags */
  flags: number;
  svcId: number;
  affinityTimeout: number;
  cluster: readonly EngineBackend[];
  local: readonly EngineBackend[];
  /**
   * With EngineFeFlags.MAGLEV: the sets' Maglev tables (src/model/maglev.ts
   * maglevTable over the backends' "ip:port", entries are ordinals in the
   * set); a set with backends must have one. Frontends given the same
   * arrays share them in the blob.
   */
  maglev?: { cluster?: Uint16Array; local?: Uint16Array };
}

/** Where frames to a backend address leave, and SNAT's source towards it. */
export interface EngineNeighbour {
  ip: string;
  /** index into ports */
  port: number;
  mac: string;
  /** node address for SNAT towards it; undefined: none */
  snat?: string;
}

export interface EngineTable {
  generation: number;
  ports: readonly EnginePort[];
  nodeAddresses: readonly string[];
  frontends: readonly EngineFrontend[];
  neighbours: readonly EngineNeighbour[];
  /** the engine's own SNAT source ports (disjoint from the BPF path's) */
  snatPorts: readonly [number, number];
  hairpinIp: string;
  /** the source of a pod's IPv6 flow to itself through a service (the BPF path's cfg_hairpin_ip6); left out: such flows are dropped */
  hairpinIp6?: string;
  /** the seed of the Maglev flow hash (the BPF path's cfg_maglev_seed) */
  maglevSeed: number;
  ctTimeoutsNs: { synSent: bigint; established: bigint; finsSeen: bigint; rstSeen: bigint; udp: bigint };
}

function ip4(b: Buffer, off: number, ip: string, what: string): void {
  if (!isIPv4(ip)) throw new Error(`${what}: "${ip}" is not an IPv4 address`);
  const p = ip.split('.').map(Number);
  for (let i = 0; i < 4; i++) b[off + i] = p[i]!;
}

function mac(b: Buffer, off: number, m: string, what: string): void {
  const p = m.split(':');
  if (p.length !== 6 || p.some((x) => !/^[0-9a-fA-F]{2}$/.test(x))) throw new Error(`${what}: "${m}" is not a MAC address`);
  for (let i = 0; i < 6; i++) b[off + i] = parseInt(p[i]!, 16);
}

function ip6(b: Buffer, off: number, ip: string, what: string): void {
  if (!isIPv6(ip)) throw new Error(`${what}: "${ip}" is not an IPv6 address`);
  writeIpv6(b, off, ip);
}

const v6 = (ip: string): boolean => ip.includes(':');

/** Backends of frontends with the same set laid out once (per family). */
function layBackends(fes: readonly EngineFrontend[]): { bes: EngineBackend[]; start: number[] } {
  const beIndex = new Map<string, number>();
  const bes: EngineBackend[] = [];
  const start: number[] = [];
  for (const f of fes) {
    const list = [...f.cluster, ...f.local];
    const key = list.map((b) => `${b.ip}:${b.port}:${b.local ? 1 : 0}`).join(',') + `#${f.cluster.length}`;
    let at = beIndex.get(key);
    if (at === undefined) {
      at = bes.length;
      bes.push(...list);
      beIndex.set(key, at);
    }
    start.push(at);
  }
  return { bes, start };
}

/** A frontend record's fields after its address (bytes 4-31 of the record at o). */
function putFrontend(b: Buffer, o: number, f: EngineFrontend, beStart: number, mgStart: number): void {
  b.writeUInt16LE(f.port, o + 4);
  b[o + 6] = f.protocol === 'UDP' ? 17 : 6;
  b[o + 7] = f.flags;
  b.writeUInt32LE(f.svcId >>> 0, o + 8);
  b.writeUInt32LE(f.affinityTimeout, o + 12);
  b.writeUInt32LE(beStart, o + 16);
  b.writeUInt16LE(f.cluster.length, o + 20);
  b.writeUInt16LE(f.local.length, o + 22);
  b.writeUInt32LE(mgStart, o + 24);
  b.writeUInt16LE(f.maglev?.cluster?.length ?? 0, o + 28);
  b.writeUInt16LE(f.maglev?.local?.length ?? 0, o + 30);
}

/** Encode the table; throws naming the record and field that cannot be encoded. */
export function encodeTable(t: EngineTable): Buffer {
  const fes4 = t.frontends.filter((f) => !v6(f.ip));
  const fes6 = t.frontends.filter((f) => v6(f.ip));
  const addrs4 = t.nodeAddresses.filter((a) => !v6(a));
  const addrs6 = t.nodeAddresses.filter((a) => v6(a));
  const neigh4 = t.neighbours.filter((n) => !v6(n.ip));
  const neigh6 = t.neighbours.filter((n) => v6(n.ip));
  const l4 = layBackends(fes4);
  const l6 = layBackends(fes6);
  // Maglev tables, each pair (cluster, local) laid out once, for both families.
  const tableIds = new Map<Uint16Array, number>();
  const idOf = (a: Uint16Array | undefined): number => {
    if (!a) return 0;
    let id = tableIds.get(a);
    if (id === undefined) tableIds.set(a, (id = tableIds.size + 1));
    return id;
  };
  const pairAt = new Map<string, number>();
  const maglevParts: Uint16Array[] = [];
  let nmaglev = 0;
  const mgStartOf = (f: EngineFrontend): number => {
    const c = f.maglev?.cluster;
    const l = f.maglev?.local;
    if (!(f.flags & EngineFeFlags.MAGLEV)) {
      if (c || l) throw new Error(`frontend ${f.ip}:${f.port}/${f.protocol}: Maglev tables without the MAGLEV flag`);
      return 0;
    }
    const key = `${idOf(c)},${idOf(l)}`;
    let at = pairAt.get(key);
    if (at === undefined) {
      at = nmaglev;
      for (const a of [c, l]) {
        if (!a) continue;
        maglevParts.push(a);
        nmaglev += a.length;
      }
      pairAt.set(key, at);
    }
    return at;
  };
  const mg4 = fes4.map(mgStartOf);
  const mg6 = fes6.map(mgStartOf);
  const total =
    HDR +
    t.ports.length * PORT +
    addrs4.length * ADDR +
    fes4.length * FE +
    l4.bes.length * BE +
    neigh4.length * NEIGH +
    nmaglev * MAGLEV +
    addrs6.length * ADDR6 +
    fes6.length * FE6 +
    l6.bes.length * BE6 +
    neigh6.length * NEIGH6;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(TABLE_MAGIC, 0);
  b.writeUInt16LE(TABLE_VERSION, 4);
  b.writeUInt16LE(HDR, 6);
  b.writeUInt32LE(t.generation >>> 0, 8);
  b.writeUInt32LE(t.ports.length, 12);
  b.writeUInt32LE(addrs4.length, 16);
  b.writeUInt32LE(fes4.length, 20);
  b.writeUInt32LE(l4.bes.length, 24);
  b.writeUInt32LE(neigh4.length, 28);
  b.writeUInt16LE(t.snatPorts[0], 32);
  b.writeUInt16LE(t.snatPorts[1], 34);
  ip4(b, 36, t.hairpinIp, 'hairpin address');
  b.writeBigUInt64LE(t.ctTimeoutsNs.synSent, 40);
  b.writeBigUInt64LE(t.ctTimeoutsNs.established, 48);
  b.writeBigUInt64LE(t.ctTimeoutsNs.finsSeen, 56);
  b.writeBigUInt64LE(t.ctTimeoutsNs.rstSeen, 64);
  b.writeBigUInt64LE(t.ctTimeoutsNs.udp, 72);
  b.writeUInt32LE(total, 80);
  b.writeUInt32LE(nmaglev, 84);
  b.writeUInt32LE(t.maglevSeed >>> 0, 88);
  b.writeUInt32LE(addrs6.length, 96);
  b.writeUInt32LE(fes6.length, 100);
  b.writeUInt32LE(l6.bes.length, 104);
  b.writeUInt32LE(neigh6.length, 108);
  if (t.hairpinIp6) ip6(b, 112, t.hairpinIp6, 'IPv6 hairpin address');
  let o = HDR;
  for (const p of t.ports) {
    b.writeUInt32LE(p.ifindex, o);
    b.writeUInt32LE(p.pod ? ENGINE_PORT_POD : 0, o + 4);
    mac(b, o + 8, p.mac, `port ${p.name}`);
    b.write(p.name.slice(0, 16), o + 16, 'latin1');
    o += PORT;
  }
  for (const a of addrs4) {
    ip4(b, o, a, 'node address');
    o += ADDR;
  }
  fes4.forEach((f, i) => {
    ip4(b, o, f.ip, `frontend ${f.ip}:${f.port}/${f.protocol}`);
    putFrontend(b, o, f, l4.start[i]!, mg4[i]!);
    o += FE;
  });
  for (const be of l4.bes) {
    ip4(b, o, be.ip, 'backend');
    b.writeUInt16LE(be.port, o + 4);
    b[o + 6] = be.local ? 1 : 0;
    o += BE;
  }
  for (const n of neigh4) {
    ip4(b, o, n.ip, 'neighbour');
    if (n.snat) ip4(b, o + 4, n.snat, `neighbour ${n.ip} SNAT source`);
    b[o + 8] = n.port;
    mac(b, o + 9, n.mac, `neighbour ${n.ip}`);
    o += NEIGH;
  }
  for (const a of maglevParts) {
    for (const v of a) {
      b.writeUInt16LE(v, o);
      o += MAGLEV;
    }
  }
  for (const a of addrs6) {
    ip6(b, o, a, 'node address');
    o += ADDR6;
  }
  fes6.forEach((f, i) => {
    ip6(b, o, f.ip, `frontend [${f.ip}]:${f.port}/${f.protocol}`);
    putFrontend(b, o + 16, f, l6.start[i]!, mg6[i]!);
    o += FE6;
  });
  for (const be of l6.bes) {
    ip6(b, o, be.ip, `backend of an IPv6 frontend`);
    b.writeUInt16LE(be.port, o + 16);
    b[o + 18] = be.local ? 1 : 0;
    o += BE6;
  }
  for (const n of neigh6) {
    ip6(b, o, n.ip, 'neighbour');
    if (n.snat) ip6(b, o + 16, n.snat, `neighbour ${n.ip} SNAT source`);
    b[o + 32] = n.port;
    mac(b, o + 33, n.mac, `neighbour ${n.ip}`);
    o += NEIGH6;
  }
  return b;
}
