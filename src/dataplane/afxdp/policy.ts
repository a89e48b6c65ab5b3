/**
 * The engine's NetworkPolicy state as one binary blob (the layout
 * addon/engine/policy.c parses and checks): what the BPF policy maps hold,
 * taken from the map writer's mirror of them (PolicyMapWriter.written()),
 * so that the engine's policy node takes the BPF path's decisions from the
 * same state (deny-all tables, removed tables, the isolated count that
 * switches enforcement on, all as written). Built whole after every policy
 * sync and swapped in at once by the engine (make-before-break).
 *
 * Why the writer's mirror and not the pinned maps read back: the mirror is
 * exactly what the maps hold (it changes only with a write that
 * succeeded), it is there in the agent's memory as each sync ends (the
 * engine takes the change in the same turn as the BPF maps, without
 * polling), and reading every inner map back would cost a syscall per
 * entry on every sync.
 */
import { IpcacheFlags, PolDir, PolVerdict } from '../bpf/codecs.js';
import type { WrittenPolicy } from '../bpf/policy-maps.js';
import type { TableEntry } from '../bpf/policy-entries.js';
import { PROTO_ANY } from '../../model/policy/compiled.js';
import { isIPv6 } from '../../net/ip.js';
import { writeIpv6 } from '../../net/ip6.js';

export const POLICY_MAGIC = 0x50585042; // "BPXP"
export const POLICY_VERSION = 2;
const HDR = 40;
const PFX = 16;
const PFX6 = 28;
const PODIF = 8;
const EP = 8;
const TBL = 8;
const RULE = 16;
/** addon/engine/policy.h ENG_POL_ANY_PROTO */
const ANY_PROTO = 0xff;

export interface EnginePolicyFigures {
  /** both families */
  prefixes: number;
  endpoints: number;
  tables: number;
  entries: number;
  bytes: number;
}

function putAddr(b: Buffer, o: number, ip: string): void {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
    throw new Error(`engine policy: "${ip}" is not an IPv4 address`);
  }
  for (let i = 0; i < 4; i++) b[o + i] = p[i]!;
}

/**
 * Encode what the policy maps hold for the engine (tables shared between
 * endpoints as the maps share them). podAddrs: bpfproxy_pod_addrs (pod
 * interface ifindex -> the IPv4 address of its pod), by which the engine
 * fails closed on a pod's IPv6 address the ipcache lacks, as the BPF path.
 */
export function encodePolicy(
  w: WrittenPolicy,
  podAddrs: ReadonlyMap<number, string> = new Map(),
): { blob: Buffer; figures: EnginePolicyFigures } {
  const tableOf = new Map<readonly TableEntry[], number>();
  const tables: Array<readonly TableEntry[]> = [];
  const eps: Array<[number, number]> = [];
  let rules = 0;
  for (const [id, list] of [...w.tables].sort((a, b) => a[0] - b[0])) {
    let t = tableOf.get(list);
    if (t === undefined) {
      tableOf.set(list, (t = tables.length));
      tables.push(list);
      rules += list.length;
    }
    eps.push([id, t]);
  }
  const ipcache6 = w.ipcache6 ?? [];
  const pods = [...podAddrs].sort((a, b) => a[0] - b[0]);
  const bytes =
    HDR + w.ipcache.length * PFX + eps.length * EP + tables.length * TBL + rules * RULE + ipcache6.length * PFX6 + pods.length * PODIF;
  const b = Buffer.alloc(bytes);
  b.writeUInt32LE(POLICY_MAGIC, 0);
  b.writeUInt16LE(POLICY_VERSION, 4);
  b.writeUInt16LE(HDR, 6);
  b.writeUInt32LE(w.generation >>> 0, 8);
  b.writeUInt32LE(w.isolated >>> 0, 12);
  b.writeUInt32LE(w.ipcache.length, 16);
  b.writeUInt32LE(eps.length, 20);
  b.writeUInt32LE(tables.length, 24);
  b.writeUInt32LE(rules, 28);
  b.writeUInt32LE(ipcache6.length, 32);
  b.writeUInt32LE(pods.length, 36);
  let o = HDR;
  for (const [k, v] of w.ipcache) {
    putAddr(b, o, k.addr);
    b.writeUInt32LE(v.identity >>> 0, o + 4);
    b.writeUInt32LE(v.endpoint >>> 0, o + 8);
    b[o + 12] = k.prefixlen;
    b[o + 13] = v.flags & (IpcacheFlags.INGRESS_ISO | IpcacheFlags.EGRESS_ISO);
    o += PFX;
  }
  for (const [id, t] of eps) {
    b.writeUInt32LE(id >>> 0, o);
    b.writeUInt32LE(t, o + 4);
    o += EP;
  }
  let first = 0;
  for (const t of tables) {
    b.writeUInt32LE(first, o);
    b.writeUInt32LE(t.length, o + 4);
    first += t.length;
    o += TBL;
  }
  for (const t of tables) {
    for (const e of t) {
      b.writeUInt32LE(e.peer >>> 0, o);
      b.writeUInt32LE(e.ruleId >>> 0, o + 4);
      b.writeUInt16LE(e.proto === PROTO_ANY ? 0 : e.port, o + 8);
      b[o + 10] = e.direction === 'ingress' ? PolDir.INGRESS : PolDir.EGRESS;
      b[o + 11] = e.proto === PROTO_ANY ? 0 : e.proto;
      b[o + 12] = e.proto === PROTO_ANY ? ANY_PROTO : e.portPrefixLen;
      b[o + 13] = e.verdict === 'allow' ? PolVerdict.ALLOW : PolVerdict.DENY;
      o += RULE;
    }
  }
  for (const [k, v] of ipcache6) {
    if (!isIPv6(k.addr)) throw new Error(`engine policy: "${k.addr}" is not an IPv6 address`);
    writeIpv6(b, o, k.addr);
    b.writeUInt32LE(v.identity >>> 0, o + 16);
    b.writeUInt32LE(v.endpoint >>> 0, o + 20);
    b[o + 24] = k.prefixlen;
    b[o + 25] = v.flags & (IpcacheFlags.INGRESS_ISO | IpcacheFlags.EGRESS_ISO);
    o += PFX6;
  }
  for (const [ifindex, addr4] of pods) {
    b.writeUInt32LE(ifindex >>> 0, o);
    putAddr(b, o + 4, addr4);
    o += PODIF;
  }
  return {
    blob: b,
    figures: { prefixes: w.ipcache.length + ipcache6.length, endpoints: eps.length, tables: tables.length, entries: rules, bytes },
  };
}
