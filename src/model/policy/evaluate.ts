/**
 * The reference decision: what the datapath decides for a packet under a
 * CompiledPolicy, step by step as the BPF programs take it, so the BPF
 * tests and `bpfproxy trace` can compare against it.
 *
 * For the local endpoint at one end of the packet (the source for egress,
 * the destination for ingress):
 * 1. not isolated in that direction: allow (no lookup);
 * 2. the peer's identity: longest-prefix match of the other address over
 *    `identities` (0.0.0.0/0 is always there: WORLD);
 * 3. two lookups in the endpoint's table, each a longest-prefix match over
 *    {peer, direction, proto, port}: at the exact peer identity, then at
 *    IDENTITY_ANY. Within one lookup a protocol-specific entry is longer than
 *    a PROTO_ANY one, and a longer port prefix longer than a shorter one;
 * 4. of the two results a deny wins, then the longer (proto, port) prefix,
 *    then the exact identity; none: deny.
 * A packet between two local endpoints is checked at both: egress of the
 * source, then ingress of the destination; both must allow.
 */
import {
  IDENTITY_ANY,
  IDENTITY_WORLD,
  IDENTITY_WORLD6,
  PROTO_ANY,
  type CompiledPolicy,
  type EndpointPolicy,
  type PolicyDirection,
  type PolicyRuleEntry,
} from './compiled.js';
import { ipv6ToBig, mask6Of, maskOf, parsePrefix, portInPrefix } from './prefix.js';
import { ipv4ToInt } from '../addresses.js';

export interface PolicyPacket {
  src: string;
  dst: string;
  /** IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP...). */
  proto: number;
  /** Destination port (0 for protocols without ports). */
  dport: number;
}

export type DecisionReason =
  /** The endpoint is not isolated in this direction. */
  | 'not-isolated'
  /** An entry matched: ruleId names it. */
  | 'rule'
  /** Isolated and no entry matched. */
  | 'no-match';

export interface Decision {
  verdict: 'allow' | 'deny';
  reason: DecisionReason;
  direction: PolicyDirection;
  /** The local endpoint whose table decided. */
  endpoint: number;
  /** The identity of the other end. */
  peer: number;
  /** The matching entry's rule (reason 'rule'). */
  ruleId?: number;
  /** The matching entry itself. */
  entry?: PolicyRuleEntry;
}

export interface PacketDecision {
  verdict: 'allow' | 'deny';
  /** The rule of the deciding entry: the denying one, or the last allowing one. */
  ruleId?: number;
  /** Egress of the source, when it is a local endpoint. */
  egress?: Decision;
  /** Ingress of the destination, when it is a local endpoint. */
  ingress?: Decision;
}

/** Lookup structures over one CompiledPolicy, built once per object. */
class Index {
  readonly byLen: Array<Map<number, number>> = Array.from({ length: 33 }, () => new Map<number, number>());
  readonly lens: number[];
  readonly byLen6: Array<Map<bigint, number>> = Array.from({ length: 129 }, () => new Map<bigint, number>());
  readonly lens6: number[];
  readonly endpointByAddr = new Map<string, EndpointPolicy>();
  /** endpoint id → "direction/peer" → entries */
  readonly tables = new Map<number, Map<string, PolicyRuleEntry[]>>();

  constructor(cp: CompiledPolicy) {
    for (const e of cp.identities) {
      const p = parsePrefix(e.prefix);
      if (p.big !== undefined) this.byLen6[p.bits]!.set(p.big, e.identity);
      else this.byLen[p.bits]!.set(p.base, e.identity);
    }
    this.lens = this.byLen
      .map((m, bits) => (m.size ? bits : -1))
      .filter((b) => b >= 0)
      .reverse();
    this.lens6 = this.byLen6
      .map((m, bits) => (m.size ? bits : -1))
      .filter((b) => b >= 0)
      .reverse();
    for (const ep of cp.endpoints) {
      for (const a of ep.addresses) this.endpointByAddr.set(a, ep);
      const t = new Map<string, PolicyRuleEntry[]>();
      for (const e of ep.entries) {
        const k = `${e.direction}/${e.peer}`;
        let list = t.get(k);
        if (!list) t.set(k, (list = []));
        list.push(e);
      }
      this.tables.set(ep.id, t);
    }
  }

  identityOf(addr: string): number {
    if (addr.includes(':')) {
      const n6 = ipv6ToBig(addr);
      for (const bits of this.lens6) {
        const id = this.byLen6[bits]!.get(n6 & mask6Of(bits));
        if (id !== undefined) return id;
      }
      return IDENTITY_WORLD6;
    }
    const n = ipv4ToInt(addr);
    for (const bits of this.lens) {
      const id = this.byLen[bits]!.get((n & maskOf(bits)) >>> 0);
      if (id !== undefined) return id;
    }
    return IDENTITY_WORLD;
  }
}

const indexes = new WeakMap<CompiledPolicy, Index>();
function indexOf(cp: CompiledPolicy): Index {
  let ix = indexes.get(cp);
  if (!ix) indexes.set(cp, (ix = new Index(cp)));
  return ix;
}

/** Length of an entry's (proto, port) prefix as the LPM key sees it: PROTO_ANY 0, else 8 + port prefix bits. */
export const entryPrefixLen = (e: { proto: number; portPrefixLen: number }): number => (e.proto === PROTO_ANY ? 0 : 8 + e.portPrefixLen);

/** One LPM lookup in one endpoint's table at one peer identity. */
function lookup(list: PolicyRuleEntry[] | undefined, proto: number, dport: number): PolicyRuleEntry | undefined {
  let best: PolicyRuleEntry | undefined;
  for (const e of list ?? []) {
    if (e.proto !== PROTO_ANY && (e.proto !== proto || !portInPrefix(dport, e.port, e.portPrefixLen))) continue;
    if (!best || entryPrefixLen(e) > entryPrefixLen(best)) best = e;
  }
  return best;
}

/** The identity the datapath gives addr. */
export function identityOf(cp: CompiledPolicy, addr: string): number {
  return indexOf(cp).identityOf(addr);
}

/** The local endpoint owning addr, if any. */
export function endpointOf(cp: CompiledPolicy, addr: string): EndpointPolicy | undefined {
  return indexOf(cp).endpointByAddr.get(addr);
}

/**
 * The decision of one endpoint's table for a packet in one direction:
 * egress checks the endpoint owning pkt.src against pkt.dst, ingress the one
 * owning pkt.dst against pkt.src. undefined when that address is no local
 * endpoint.
 */
export function decide(cp: CompiledPolicy, pkt: PolicyPacket, direction: PolicyDirection): Decision | undefined {
  const ix = indexOf(cp);
  const [local, remote] = direction === 'egress' ? [pkt.src, pkt.dst] : [pkt.dst, pkt.src];
  const ep = ix.endpointByAddr.get(local);
  if (!ep) return undefined;
  const peer = ix.identityOf(remote);
  const base = { direction, endpoint: ep.id, peer };
  const isolated = direction === 'egress' ? ep.egressIsolated : ep.ingressIsolated;
  if (!isolated) return { ...base, verdict: 'allow', reason: 'not-isolated' };
  const table = ix.tables.get(ep.id);
  const exact = peer === IDENTITY_ANY ? undefined : lookup(table?.get(`${direction}/${peer}`), pkt.proto, pkt.dport);
  const any = lookup(table?.get(`${direction}/${IDENTITY_ANY}`), pkt.proto, pkt.dport);
  let win: PolicyRuleEntry | undefined;
  if (exact && any) {
    if (exact.verdict !== any.verdict) win = exact.verdict === 'deny' ? exact : any;
    else win = entryPrefixLen(any) > entryPrefixLen(exact) ? any : exact;
  } else win = exact ?? any;
  if (!win) return { ...base, verdict: 'deny', reason: 'no-match' };
  return { ...base, verdict: win.verdict, reason: 'rule', ruleId: win.ruleId, entry: win };
}

/** What this node's datapath does with the packet: egress at a local source, then ingress at a local destination. */
export function evaluate(cp: CompiledPolicy, pkt: PolicyPacket): PacketDecision {
  const egress = decide(cp, pkt, 'egress');
  if (egress?.verdict === 'deny') return { verdict: 'deny', egress, ...(egress.ruleId !== undefined ? { ruleId: egress.ruleId } : {}) };
  const ingress = decide(cp, pkt, 'ingress');
  const last = ingress ?? egress;
  const out: PacketDecision = { verdict: ingress?.verdict ?? 'allow' };
  if (egress) out.egress = egress;
  if (ingress) out.ingress = ingress;
  if (last?.ruleId !== undefined) out.ruleId = last.ruleId;
  return out;
}
