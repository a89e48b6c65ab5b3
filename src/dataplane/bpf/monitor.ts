/**
 * Listening to the datapath's monitor (bpf/lib/monitor.h): events decoded
 * from the ring buffers, and the claim a listener holds.
 *
 * Each listener owns a ring buffer (addon: ringbufOpen) and puts it in one
 * of MONITOR_SLOTS slots of bpfproxy_monitor_rings: one BPF ring buffer has
 * one consumer position, so two readers of one ring would each see part of
 * the events. A slot is claimed and leased through bpfproxy_monitor_ctl,
 * an mmapable array changed with atomic operations (mapWordOp):
 *  - claim: compare-and-swap the slot's owner word from free (0), or from a
 *    holder whose lease ran out, to our token; put our ring in the slot;
 *    set the slot's lease, then raise the global lease to it (the datapath's
 *    one check is global until_ns != 0; it sends to each slot whose own
 *    lease runs);
 *  - renew every second (lease: 3 s), so a monitor killed without letting
 *    go stops costing anything within 3 s, and its slot can be taken;
 *  - release (close(), also on SIGINT in the CLI): our lease to 0, our ring
 *    out of the slot, the slot free, and the global lease to 0 if no other
 *    slot's lease runs (a compare-and-swap against the value read before
 *    looking, so a monitor starting meanwhile keeps it).
 * The agent never touches these maps after creating them: monitors and the
 * agent do not fight, and an agent restart keeps the monitors listening.
 */
import { readIpv6 } from '../../net/ip6.js';
import { native, type RingbufReader } from '../../native/index.js';
import {
  CtFlags,
  IPPROTO_SCTP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  MONITOR_RING_BYTES,
  MONITOR_SLOTS,
  MonClose,
  MonDirection,
  MonHook,
  MonType,
  MonVerdict,
  MONITOR_SNAP_LEN,
  ctKey,
  monitorCtl,
  monitorEvent,
  monitorSlot,
} from './codecs.js';
import type { DatapathMaps } from './loader.js';
import { REASONS, type ReasonName } from './reasons.js';

export type MonitorEventType = 'flow-new' | 'flow-close' | 'drop' | 'policy';
export const MONITOR_EVENT_TYPES: readonly MonitorEventType[] = ['flow-new', 'flow-close', 'drop', 'policy'];

export interface FlowTuple {
  proto: string;
  src: string;
  sport: number;
  dst: string;
  dport: number;
}

interface EventBase {
  /**
   * bpf_ktime_get_ns() (CLOCK_MONOTONIC) when it was sent, as a number:
   * exact to the ns for 104 days of uptime, to 16 ns after four years
   */
  tsNs: number;
  hook: 'pod' | 'data' | 'host' | null;
  ifindex: number;
  /** the packet as it came (flow-close: the client's side) */
  tuple: FlowTuple;
  /** skb->len */
  pktLen: number;
  /** the frame's first bytes (at most MONITOR_SNAP_LEN): a view into the batch the event came in */
  captured: Buffer;
}

export type MonitorEvent = EventBase &
  (
    | {
        type: 'flow-new' | 'flow-close';
        /** the client's tuple after translation */
        nat: FlowTuple;
        svcId: number;
        flags: string[];
        /** flow-close: what closed it, and how long it lived */
        closedBy?: 'fin' | 'rst';
        durationNs?: number;
      }
    | {
        type: 'drop';
        reason: ReasonName | `reason ${number}`;
        /** drop: dropped; otherwise what the reason does (reject, pass, icmp) */
        verdict: string;
        dropped: boolean;
        /**
         * The packet was answered (a reject's RST or ICMP error, fragmentation
         * needed): `captured` is the answer as sent back, `tuple` the packet
         * it answers (read back from the answer).
         */
        answered: boolean;
      }
    | {
        type: 'policy';
        verdict: 'allow' | 'deny' | `verdict ${number}`;
        direction: 'ingress' | 'egress' | null;
        ruleId: number;
        endpoint: number;
      }
  );

/** addr:port, [addr]:port for IPv6. */
export const hostPort = (ip: string, port: number): string => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);

export const protoName = (n: number): string =>
  n === IPPROTO_TCP ? 'TCP' : n === IPPROTO_UDP ? 'UDP' : n === IPPROTO_SCTP ? 'SCTP' : n === 1 ? 'ICMP' : n === 58 ? 'ICMPv6' : String(n);
const HOOKS = { [MonHook.POD]: 'pod', [MonHook.DATA]: 'data', [MonHook.HOST]: 'host' } as const;

function ctFlagNames(f: number): string[] {
  const out: string[] = [];
  if (f & CtFlags.SNAT) out.push('snat');
  if (f & CtFlags.HAIRPIN) out.push('hairpin');
  if (f & CtFlags.EXTERNAL) out.push('external');
  if (f & CtFlags.HOST_BE) out.push('host-backend');
  return out;
}

/**
 * The packet an answer answers: a TCP RST goes back with addresses and
 * ports swapped; an ICMP error quotes the packet's IPv4 header and first 8
 * bytes (lib/reject.h builds it with a 20-byte outer header).
 */
function answeredTuple(t: FlowTuple, frame: Buffer): FlowTuple {
  if (t.proto === 'TCP') return { proto: t.proto, src: t.dst, sport: t.dport, dst: t.src, dport: t.sport };
  const ip = (o: number) => `${frame[o]}.${frame[o + 1]}.${frame[o + 2]}.${frame[o + 3]}`;
  const q = 14 + 20 + 8;
  if (t.proto !== 'ICMP' || frame.length < q + 20) return t;
  const ihl = ((frame[q] ?? 0) & 0x0f) * 4;
  const proto = frame[q + 9] ?? 0;
  const ports = frame.length >= q + ihl + 4 && (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP);
  return {
    proto: protoName(proto),
    src: ip(q + 12),
    sport: ports ? frame.readUInt16BE(q + ihl) : 0,
    dst: ip(q + 16),
    dport: ports ? frame.readUInt16BE(q + ihl + 2) : 0,
  };
}

/**
 * As answeredTuple(), IPv6: an ICMPv6 error quotes the packet from its
 * IPv6 header on (lib/reject6.h builds it with a 40-byte outer header, no
 * extension header).
 */
function answeredTuple6(t: FlowTuple, frame: Buffer): FlowTuple {
  if (t.proto === 'TCP') return { proto: t.proto, src: t.dst, sport: t.dport, dst: t.src, dport: t.sport };
  const q = 14 + 40 + 8;
  if (t.proto !== 'ICMPv6' || frame.length < q + 40) return t;
  const proto = frame[q + 6] ?? 0;
  const ports = frame.length >= q + 44 && (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP);
  return {
    proto: protoName(proto),
    src: readIpv6(frame, q + 8),
    sport: ports ? frame.readUInt16BE(q + 40) : 0,
    dst: readIpv6(frame, q + 24),
    dport: ports ? frame.readUInt16BE(q + 42) : 0,
  };
}

/** IPv6 extension headers (hop-by-hop, routing, fragment, AH, destination options) and how many are walked (lib/parse6.h). */
const EXT6 = new Set([0, 43, 44, 51, 60]);
const MAX_EXT6 = 8;

/**
 * An IPv6 drop's tuple when extension headers sit between the fixed header
 * and TCP/UDP/SCTP: the programs read the ports of a drop only right after
 * the fixed header (lib/monitor.h monitor_read_tuple(): walking there would
 * cost every drop site in the verifier), so they are read here from the
 * captured frame, walking up to 8 extension headers as lib/parse6.h does.
 * The protocol becomes the one after them; a later fragment, or ports past
 * the capture (its first 128 bytes), leave the ports 0; an extension header
 * past the capture leaves the tuple as the program sent it.
 */
function extTuple6(t: FlowTuple, frame: Buffer): FlowTuple {
  let nh = frame[14 + 6];
  if (nh === undefined || !EXT6.has(nh)) return t;
  let o = 14 + 40;
  for (let i = 0; i < MAX_EXT6 && EXT6.has(nh); i++) {
    if (o + 8 > frame.length) return t;
    const next: number = frame[o]!;
    if (nh === 44) {
      if (frame.readUInt16BE(o + 2) & 0xfff8) return { ...t, proto: protoName(next), sport: 0, dport: 0 };
      o += 8;
    } else {
      o += nh === 51 ? (frame[o + 1]! + 2) * 4 : (frame[o + 1]! + 1) * 8;
    }
    nh = next;
  }
  if (EXT6.has(nh)) return t;
  const ports = (nh === IPPROTO_TCP || nh === IPPROTO_UDP || nh === IPPROTO_SCTP) && o + 4 <= frame.length;
  return { ...t, proto: protoName(nh), sport: ports ? frame.readUInt16BE(o) : 0, dport: ports ? frame.readUInt16BE(o + 2) : 0 };
}

/** Offsets of struct monitor_event's fields, from the codec (test/codecs-btf.test.ts checks it against the BTF). */
const F = Object.fromEntries(monitorEvent.layout.map((f) => [f.name, f.offset])) as Record<
  | 'tsNs'
  | 'type'
  | 'hook'
  | 'code'
  | 'flags'
  | 'ifindex'
  | 'tuple'
  | 'nat'
  | 'svcId'
  | 'ruleId'
  | 'endpoint'
  | 'pktLen'
  | 'durationNs'
  | 'capLen'
  | 'family'
  | 'data'
  | 'saddr6'
  | 'daddr6'
  | 'natSaddr6'
  | 'natDaddr6',
  number
>;
const K = Object.fromEntries(ctKey.layout.map((f) => [f.name, f.offset])) as Record<
  'saddr' | 'daddr' | 'sport' | 'dport' | 'proto',
  number
>;

const ip4At = (b: Buffer, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
/** A tuple: its IPv4 addresses at o, or (family 6) the IPv6 ones at s6 and d6, ports and proto at o either way. */
const tupleAt = (b: Buffer, o: number, s6?: number, d6?: number): FlowTuple => ({
  proto: protoName(b[o + K.proto]!),
  src: s6 === undefined ? ip4At(b, o + K.saddr) : readIpv6(b, s6),
  sport: b.readUInt16BE(o + K.sport),
  dst: d6 === undefined ? ip4At(b, o + K.daddr) : readIpv6(b, d6),
  dport: b.readUInt16BE(o + K.dport),
});

/**
 * One record (struct monitor_event) as the ring carried it; null if it is
 * not one. Read field by field (a listener decodes hundreds of thousands a
 * second); `captured` is a view into b, not a copy.
 */
export function decodeEvent(b: Buffer, off = 0): MonitorEvent | null {
  if (b.length - off < monitorEvent.size) return null;
  const type = b[off + F.type]!;
  const code = b[off + F.code]!;
  const flags = b[off + F.flags]!;
  const capLen = Math.min(b.readUInt16LE(off + F.capLen), MONITOR_SNAP_LEN);
  // every literal whole, no spread: spreading a base object costs more than the rest of the decoding
  const tsNs = b.readUInt32LE(off + F.tsNs + 4) * 2 ** 32 + b.readUInt32LE(off + F.tsNs);
  const hook = HOOKS[b[off + F.hook]! as keyof typeof HOOKS] ?? null;
  const ifindex = b.readUInt32LE(off + F.ifindex);
  const v6 = b[off + F.family] === 6;
  const tuple = v6 ? tupleAt(b, off + F.tuple, off + F.saddr6, off + F.daddr6) : tupleAt(b, off + F.tuple);
  const pktLen = b.readUInt32LE(off + F.pktLen);
  const captured = b.subarray(off + F.data, off + F.data + capLen);
  switch (type) {
    case MonType.FLOW_NEW:
    case MonType.FLOW_CLOSE: {
      const nat = v6 ? tupleAt(b, off + F.nat, off + F.natSaddr6, off + F.natDaddr6) : tupleAt(b, off + F.nat);
      const svcId = b.readUInt32LE(off + F.svcId);
      if (type === MonType.FLOW_NEW)
        return { type: 'flow-new', tsNs, hook, ifindex, tuple, pktLen, captured, nat, svcId, flags: ctFlagNames(flags) };
      const durationNs = b.readUInt32LE(off + F.durationNs + 4) * 2 ** 32 + b.readUInt32LE(off + F.durationNs);
      const closedBy = code === MonClose.RST ? 'rst' : 'fin';
      return {
        type: 'flow-close',
        tsNs,
        hook,
        ifindex,
        tuple,
        pktLen,
        captured,
        nat,
        svcId,
        flags: ctFlagNames(flags),
        closedBy,
        durationNs,
      };
    }
    case MonType.DROP: {
      const r = REASONS[code];
      const dropped = flags === 1;
      const verdict = dropped ? 'drop' : (r?.verdict ?? 'pass');
      const answered = verdict === 'reject' || verdict === 'icmp';
      return {
        type: 'drop',
        tsNs,
        hook,
        ifindex,
        tuple: answered ? (v6 ? answeredTuple6(tuple, captured) : answeredTuple(tuple, captured)) : v6 ? extTuple6(tuple, captured) : tuple,
        pktLen,
        captured,
        reason: r ? r.name : `reason ${code}`,
        verdict,
        dropped,
        answered,
      };
    }
    case MonType.POLICY:
      return {
        type: 'policy',
        tsNs,
        hook,
        ifindex,
        tuple,
        pktLen,
        captured,
        verdict: code === MonVerdict.ALLOW ? 'allow' : code === MonVerdict.DENY ? 'deny' : `verdict ${code}`,
        direction: flags === MonDirection.INGRESS ? 'ingress' : flags === MonDirection.EGRESS ? 'egress' : null,
        ruleId: b.readUInt32LE(off + F.ruleId),
        endpoint: b.readUInt32LE(off + F.endpoint),
      };
    default:
      return null;
  }
}

/**
 * The records of one batch (addon/ringbuf.cc: u32 length, 4 bytes of zero,
 * the record padded to 8). Records that are not events are counted, not
 * returned.
 */
export function decodeBatch(records: Buffer, count: number): { events: MonitorEvent[]; malformed: number } {
  const events: MonitorEvent[] = [];
  let malformed = 0;
  let off = 0;
  for (let i = 0; i < count && off + 8 <= records.length; i++) {
    const len = records.readUInt32LE(off);
    const ev = len === monitorEvent.size && off + 8 + len <= records.length ? decodeEvent(records, off + 8) : null;
    if (ev) events.push(ev);
    else malformed++;
    off += 8 + Math.ceil(len / 8) * 8;
  }
  return { events, malformed };
}

// ---- filters ---------------------------------------------------------------

export interface MonitorFilter {
  types?: readonly MonitorEventType[];
  /** an address on either side, before or after translation */
  ip?: string;
  /** one of these addresses on either side, before or after translation (--pod, --namespace); empty: nothing matches */
  addresses?: ReadonlySet<string>;
  /** a port on either side, before or after translation */
  port?: number;
  proto?: string;
  /** drop: drop, reject, pass, icmp; policy: allow, deny (other events never match) */
  verdict?: string;
  /** service port name ("ns/name" or "ns/name:port/PROTO"): flows only */
  service?: string;
}

/** Whether an event passes the filter; svcName resolves a flow's service id. */
export function matches(ev: MonitorEvent, f: MonitorFilter, svcName: (id: number) => string | undefined = () => undefined): boolean {
  if (f.types && !f.types.includes(ev.type)) return false;
  const tuples = 'nat' in ev ? [ev.tuple, ev.nat] : [ev.tuple];
  if (f.ip && !tuples.some((t) => t.src === f.ip || t.dst === f.ip)) return false;
  if (f.addresses && !tuples.some((t) => f.addresses!.has(t.src) || f.addresses!.has(t.dst))) return false;
  if (f.port !== undefined && !tuples.some((t) => t.sport === f.port || t.dport === f.port)) return false;
  if (f.proto && ev.tuple.proto.toUpperCase() !== f.proto.toUpperCase()) return false;
  if (f.verdict && !('verdict' in ev && ev.verdict === f.verdict)) return false;
  if (f.service) {
    if (!('svcId' in ev)) return false;
    const name = svcName(ev.svcId) ?? '';
    if (name !== f.service && !name.startsWith(`${f.service}:`)) return false;
  }
  return true;
}

// ---- a listener --------------------------------------------------------------

export type MonitorMaps = Pick<DatapathMaps, 'monitorCtl' | 'monitorRings' | 'monitorLost'>;

export const LEASE_MS = 3000;
export const RENEW_MS = 1000;
/** A claim younger than this is never taken over, even before its first lease. */
const CLAIM_GRACE_S = 5n;

const offsetOf = (fields: readonly { name: string; offset: number }[], name: string): number => {
  const f = fields.find((x) => x.name === name);
  if (!f) throw new Error(`monitor_ctl has no field ${name}: codecs.ts and bpf/lib/types.h disagree`);
  return f.offset;
};
const GLOBAL_UNTIL = offsetOf(monitorCtl.layout, 'untilNs');
const SLOTS_AT = offsetOf(monitorCtl.layout, 'slot');
const ownerAt = (i: number) => SLOTS_AT + i * monitorSlot.size + offsetOf(monitorSlot.layout, 'owner');
const untilAt = (i: number) => SLOTS_AT + i * monitorSlot.size + offsetOf(monitorSlot.layout, 'untilNs');

export interface MonitorSessionOptions {
  leaseMs?: number;
  renewMs?: number;
  /** the reader failed, or the slot was taken over (this session stopped): say so */
  onError?: (e: Error) => void;
}

/** A listening monitor: a slot, its ring buffer, its lease. close() lets go of all three. */
export class MonitorSession {
  /** events delivered so far */
  received = 0;
  /** records that were not events (a datapath of another build) */
  malformed = 0;
  private closed = false;
  private readonly lostBase: bigint;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    private readonly maps: MonitorMaps,
    readonly slot: number,
    private readonly token: bigint,
    private readonly reader: RingbufReader,
    private readonly leaseNs: bigint,
    renewMs: number,
    private readonly onError: (e: Error) => void,
  ) {
    this.lostBase = this.lostTotal();
    this.renew();
    this.timer = setInterval(() => {
      try {
        this.renew();
      } catch (e) {
        this.fail(e as Error);
      }
    }, renewMs);
  }

  /** Claim a slot and start listening; events arrive a batch at a time. */
  static open(maps: MonitorMaps, onEvents: (events: MonitorEvent[]) => void, opts: MonitorSessionOptions = {}): MonitorSession {
    const ctl = maps.monitorCtl.handle;
    const n = native();
    const nowNs = n.monotonicNs();
    const nowS = nowNs / 1_000_000_000n;
    const token = ((nowS & 0xffffffffn) << 32n) | BigInt((Math.floor(Math.random() * 0xfffffffe) + 1) >>> 0);
    let slot = -1;
    for (let i = 0; i < MONITOR_SLOTS && slot < 0; i++) {
      const owner = n.mapWordOp(ctl, ownerAt(i), 'load');
      const until = n.mapWordOp(ctl, untilAt(i), 'load');
      const claimedAtS = owner >> 32n;
      const free = owner === 0n || (until < nowNs && claimedAtS + CLAIM_GRACE_S < nowS);
      if (free && n.mapWordOp(ctl, ownerAt(i), 'cas', token, owner) === owner) slot = i;
    }
    if (slot < 0) {
      throw new Error(
        `all ${MONITOR_SLOTS} monitor slots of ${maps.monitorCtl.name} are held by running monitors: ` +
          `stop one (a monitor that was killed frees its slot within ${(opts.leaseMs ?? LEASE_MS) / 1000} s)`,
      );
    }
    let reader: RingbufReader | undefined;
    let session: MonitorSession | undefined;
    const pending: MonitorEvent[][] = [];
    try {
      reader = n.ringbufOpen(MONITOR_RING_BYTES, (batch) => {
        if ('errno' in batch) {
          const e = new Error(`reading the monitor's ring buffer failed: ${n.errnoName(batch.errno)}; no more events come`);
          if (session) session.fail(e);
          else opts.onError?.(e);
          return;
        }
        const { events, malformed } = decodeBatch(batch.records, batch.count);
        if (session) {
          session.received += events.length;
          session.malformed += malformed;
        }
        if (events.length) {
          if (session) onEvents(events);
          else pending.push(events);
        }
      });
      maps.monitorRings.set({ v: slot }, { v: reader.fd });
      session = new MonitorSession(
        maps,
        slot,
        token,
        reader,
        BigInt(Math.round((opts.leaseMs ?? LEASE_MS) * 1e6)),
        opts.renewMs ?? RENEW_MS,
        opts.onError ?? (() => undefined),
      );
    } catch (e) {
      reader?.close();
      try {
        maps.monitorRings.delete({ v: slot });
      } catch {
        // the slot's ring was never set
      }
      n.mapWordOp(ctl, ownerAt(slot), 'cas', 0n, token);
      throw e;
    }
    for (const p of pending) {
      session.received += p.length;
      onEvents(p);
    }
    return session;
  }

  /** Events the datapath could not put in this session's ring (full), since it started. */
  lost(): number {
    return Number(this.lostTotal() - this.lostBase);
  }

  private lostTotal(): bigint {
    return this.maps.monitorLost.getPerCpu({ v: this.slot }).reduce((a, c) => a + c.v, 0n);
  }

  /** Push our lease out, and the global one with it. */
  private renew(): void {
    if (this.closed) return;
    const n = native();
    const ctl = this.maps.monitorCtl.handle;
    if (n.mapWordOp(ctl, ownerAt(this.slot), 'load') !== this.token) {
      throw new Error(
        `monitor slot ${this.slot} was taken over by another monitor: this one stalled for longer than its lease; no more events come`,
      );
    }
    const until = n.monotonicNs() + this.leaseNs;
    n.mapWordOp(ctl, untilAt(this.slot), 'store', until);
    for (;;) {
      const g = n.mapWordOp(ctl, GLOBAL_UNTIL, 'load');
      if (g >= until || n.mapWordOp(ctl, GLOBAL_UNTIL, 'cas', until, g) === g) break;
    }
  }

  private fail(e: Error): void {
    this.close();
    this.onError(e);
  }

  /** Stop listening and let go of the slot (twice is fine). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    const n = native();
    const ctl = this.maps.monitorCtl.handle;
    const mine = n.mapWordOp(ctl, ownerAt(this.slot), 'load') === this.token;
    if (mine) {
      n.mapWordOp(ctl, untilAt(this.slot), 'store', 0n);
      try {
        this.maps.monitorRings.delete({ v: this.slot });
      } catch {
        // gone with the pinned maps (cleanup): nothing to let go of
      }
      n.mapWordOp(ctl, ownerAt(this.slot), 'cas', 0n, this.token);
    }
    this.reader.close();
    const g = n.mapWordOp(ctl, GLOBAL_UNTIL, 'load');
    const now = n.monotonicNs();
    let others = false;
    for (let i = 0; i < MONITOR_SLOTS; i++) if (n.mapWordOp(ctl, untilAt(i), 'load') > now) others = true;
    if (!others && g !== 0n) n.mapWordOp(ctl, GLOBAL_UNTIL, 'cas', 0n, g);
  }
}
