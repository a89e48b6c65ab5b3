/**
 * Taking over from kube-proxy without moving a connection: the kernel's
 * conntrack already carries the flows kube-proxy's rules NAT'd (client ->
 * service address, translated to a backend, maybe masqueraded). Before our
 * programs attach, each such flow is written into our conntrack as a pair
 * of entries with the kernel's own translation, so its next packet, which
 * our programs see first, goes to the same backend from the same source
 * address and port. Without this a UDP flow's next datagram would be a new
 * flow to us, with a backend drawn again; a TCP flow would still work (our
 * programs leave packets of TCP flows they do not know to the kernel), but
 * adopting it keeps the whole flow on one path.
 *
 * IPv6 the same way, from the kernel's IPv6 table into bpfproxy_ct6 (kube-
 * proxy's ip6tables or nftables rules NAT'd those flows).
 *
 * Read only on the kernel's side: its conntrack is dumped (ctnetlink), never
 * changed or flushed.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Logger } from '../../log.js';
import { BpfError, native, type KernelCtEntry } from '../../native/index.js';
import {
  CtDir,
  CtFlags,
  CtState,
  FeFlags,
  IPPROTO_TCP,
  IPPROTO_UDP,
  type CtKey,
  type CtValue,
  type FeKey,
  type FeValue,
} from './codecs.js';
import type { ConntrackTimeouts } from '../../config/config.js';
import { ctPeerKey } from './conntrack-gc.js';
import type { DatapathMaps } from './loader.js';
import { BPF_NOEXIST, type BpfMap } from './map.js';
import { canonicalIpv6 } from '../../net/ip6.js';

/** A conntrack map of either family (bpfproxy_ct, bpfproxy_ct6: the same shapes, addresses as text). */
export type CtMap = Pick<BpfMap<CtKey, CtValue>, 'name' | 'maxEntries' | 'get' | 'set' | 'delete'>;

/** The maps adoption reads and writes, both families. */
export type AdoptMaps = Pick<DatapathMaps, 'ct' | 'fe' | 'nodeIps' | 'ct6' | 'fe6' | 'nodeIps6'>;

/** One family's maps: its conntrack, frontends, node addresses, and the address NodePort frontends are keyed by. */
interface FamilyMaps {
  family: 4 | 6;
  ct: CtMap;
  fe: Pick<BpfMap<FeKey, FeValue>, 'entries'>;
  nodeIps: Pick<BpfMap<{ addr: string }, { v: number }>, 'entries'>;
  any: string;
}

const familyMaps = (m: AdoptMaps): FamilyMaps[] => [
  { family: 4, ct: m.ct, fe: m.fe, nodeIps: m.nodeIps, any: '0.0.0.0' },
  { family: 6, ct: m.ct6, fe: m.fe6, nodeIps: m.nodeIps6, any: '::' },
];

/**
 * The kernel's translated entries of one family; IPv6 addresses in the
 * text form our codecs write (RFC 5952), so they compare with our keys.
 */
function kernelEntries(family: 4 | 6): KernelCtEntry[] {
  const entries = native().kernelConntrack({ translatedOnly: true, family });
  if (family === 4) return entries;
  const c = (a: string): string => canonicalIpv6(a) ?? a;
  return entries.map((e) => ({ ...e, src: c(e.src), dst: c(e.dst), rsrc: c(e.rsrc), rdst: c(e.rdst) }));
}

/** The kernel's TCP_CONNTRACK_* states (include/uapi/linux/netfilter/nf_conntrack_tcp.h). */
const TCP = { SYN_SENT: 1, SYN_RECV: 2, ESTABLISHED: 3, FIN_WAIT: 4, CLOSE_WAIT: 5, LAST_ACK: 6, SYN_SENT2: 9 } as const;
/** IPS_* status bits. */
const IPS_SEEN_REPLY = 1 << 1;
const IPS_ASSURED = 1 << 2;
const IPS_DYING = 1 << 9;
/** IP_CT_TCP_FLAG_CLOSE_INIT: this direction sent the first FIN. */
const TCP_FLAG_CLOSE_INIT = 0x04;

/** The kernel's conntrack timeouts that matter here (seconds), from its sysctls or their defaults. */
export interface KernelTimeouts {
  tcpEstablished: number;
  /** an established flow with data in flight gets the shorter of these */
  tcpUnacked: number;
  udp: number;
  udpStream: number;
}

export const KERNEL_TIMEOUT_DEFAULTS: KernelTimeouts = { tcpEstablished: 432000, tcpUnacked: 300, udp: 30, udpStream: 120 };

/** This namespace's nf_conntrack timeouts (/proc/sys/net/netfilter), defaults where one cannot be read. */
export function kernelTimeouts(dir = '/proc/sys/net/netfilter'): KernelTimeouts {
  const read = (name: string, d: number): number => {
    try {
      const v = Number(readFileSync(`${dir}/${name}`, 'utf8').trim());
      return Number.isFinite(v) && v > 0 ? v : d;
    } catch {
      return d;
    }
  };
  const d = KERNEL_TIMEOUT_DEFAULTS;
  return {
    tcpEstablished: read('nf_conntrack_tcp_timeout_established', d.tcpEstablished),
    tcpUnacked: Math.max(
      read('nf_conntrack_tcp_timeout_unacknowledged', d.tcpUnacked),
      read('nf_conntrack_tcp_timeout_max_retrans', d.tcpUnacked),
    ),
    udp: read('nf_conntrack_udp_timeout', d.udp),
    udpStream: read('nf_conntrack_udp_timeout_stream', d.udpStream),
  };
}

/** What the plan needs to know of our frontends. */
export interface FrontendIndex {
  /** the frontend a client addressed at addr:port, NodePorts (any node address) included */
  lookup(addr: string, port: number, proto: number): FeValue | undefined;
  isNodeAddress(addr: string): boolean;
}

/** any: the address NodePort frontends are keyed by ('::' in the IPv6 maps). */
export function frontendIndex(
  maps: { fe: Pick<BpfMap<FeKey, FeValue>, 'entries'>; nodeIps: Pick<BpfMap<{ addr: string }, { v: number }>, 'entries'> },
  any = '0.0.0.0',
): FrontendIndex {
  const fes = new Map(maps.fe.entries().map(([k, v]) => [`${k.addr}:${k.port}/${k.proto}`, v]));
  const nodeIps = new Set(maps.nodeIps.entries().map(([k]) => k.addr));
  return {
    isNodeAddress: (a) => nodeIps.has(a),
    lookup(addr, port, proto) {
      const exact = fes.get(`${addr}:${port}/${proto}`);
      if (exact) return exact;
      if (!nodeIps.has(addr)) return undefined;
      const np = fes.get(`${any}:${port}/${proto}`);
      return np && np.flags & FeFlags.NODEPORT ? np : undefined;
    },
  };
}

export interface AdoptionPlan {
  /** the CLOCK_MONOTONIC instant the plan was made for (deadlines count from it) */
  nowNs: bigint;
  /** both entries of each adopted connection: reply first, then forward (the order ct_create writes them) */
  pairs: Array<{ reply: [CtKey, CtValue]; fwd: [CtKey, CtValue] }>;
  /**
   * Forward keys of service flows the kernel has seen close (TIME_WAIT,
   * CLOSE). An adopted entry of ours on one of them that is still open was
   * adopted from an older read and the flow ended through the kernel before
   * our entry was written: it is closed too (settleClosed).
   */
  closedInKernel: CtKey[];
  /** kernel entries looked at (TCP and UDP of one family; adoptKernelConntrack reads only the translated ones) */
  seen: number;
  /** why the others were left to the kernel */
  skipped: {
    /** not addressed to one of our frontends, or not translated (no DNAT) */
    notService: number;
    /** TCP closing or closed (TIME_WAIT, CLOSE), or dying */
    closed: number;
    /** quiet longer than our own timeout would keep it */
    idle: number;
    /** the backend is this node itself (host network): the kernel keeps carrying it (see below) */
    hostBackend: number;
    /** a conntrack zone other than the default */
    zoned: number;
  };
}

/** Our lifetime (s) of an entry in this state (bpfConntrackTimeouts, ms). */
const lifetimeS = (proto: number, state: number, t: ConntrackTimeouts): number => {
  if (proto !== IPPROTO_TCP) return t.udpTimeout / 1000;
  if (state & CtState.RST) return t.tcpResetSeen / 1000;
  if ((state & (CtState.FIN_FWD | CtState.FIN_REPLY)) === (CtState.FIN_FWD | CtState.FIN_REPLY)) return t.tcpFinsSeen / 1000;
  if (state & CtState.ESTABLISHED) return t.tcpEstablished / 1000;
  return t.tcpSynSent / 1000;
};

/** Our state bits for a kernel entry, or undefined when it is closing or closed. */
function stateOf(e: KernelCtEntry): number | undefined {
  if (e.proto === IPPROTO_UDP) return e.status & IPS_SEEN_REPLY ? CtState.REPLY_SEEN | CtState.ESTABLISHED : 0;
  switch (e.tcpState) {
    case TCP.SYN_SENT:
    case TCP.SYN_SENT2:
      return 0;
    case TCP.SYN_RECV:
      return CtState.REPLY_SEEN;
    case TCP.ESTABLISHED:
      return CtState.REPLY_SEEN | CtState.ESTABLISHED;
    // One FIN seen: from the side the kernel marks as closing first, so
    // the other side's FIN, which we see, closes the flow for us too.
    case TCP.FIN_WAIT:
    case TCP.CLOSE_WAIT:
      return (
        CtState.REPLY_SEEN |
        CtState.ESTABLISHED |
        (e.tcpFlags & TCP_FLAG_CLOSE_INIT ? CtState.FIN_FWD : 0) |
        (e.tcpFlagsReply & TCP_FLAG_CLOSE_INIT ? CtState.FIN_REPLY : 0)
      );
    case TCP.LAST_ACK:
      return CtState.REPLY_SEEN | CtState.ESTABLISHED | CtState.FIN_FWD | CtState.FIN_REPLY;
    default:
      return undefined; // TIME_WAIT, CLOSE, NONE
  }
}

/**
 * Seconds since the kernel last saw a packet of this flow, as far as its
 * timer tells: 0 when it cannot tell. An established TCP flow's timer is
 * 5 days after its last packet, or 5 minutes while data is unacknowledged;
 * a UDP flow's 30 s, or 120 s once it is a stream.
 */
function idleS(e: KernelCtEntry, k: KernelTimeouts): number {
  if (e.proto === IPPROTO_UDP) {
    const full = e.status & IPS_ASSURED ? k.udpStream : k.udp;
    return Math.max(0, full - e.timeout);
  }
  if (e.tcpState !== TCP.ESTABLISHED || e.timeout <= k.tcpUnacked) return 0;
  return Math.max(0, k.tcpEstablished - e.timeout);
}

/**
 * The conntrack pairs that carry the kernel's service flows on: for each
 * entry whose original destination is one of our frontends and that the
 * kernel translated, the forward entry keyed by the client's tuple rewrites
 * to the kernel's reply tuple reversed (its backend, and its SNAT source if
 * it masqueraded), and the reply entry keyed by the backend's tuple rewrites
 * back. Flows to a host-network backend on this node are left to the
 * kernel: our programs hand such packets to the stack after translating
 * them, where the kernel's own entry for the flow would refuse the
 * translated tuple as a clash.
 */
export function planAdoption(
  entries: readonly KernelCtEntry[],
  fes: FrontendIndex,
  nowNs: bigint,
  ours: ConntrackTimeouts,
  kernel: KernelTimeouts = KERNEL_TIMEOUT_DEFAULTS,
): AdoptionPlan {
  const plan: AdoptionPlan = {
    nowNs,
    pairs: [],
    closedInKernel: [],
    seen: 0,
    skipped: { notService: 0, closed: 0, idle: 0, hostBackend: 0, zoned: 0 },
  };
  for (const e of entries) {
    if (e.proto !== IPPROTO_TCP && e.proto !== IPPROTO_UDP) continue;
    plan.seen++;
    if (e.zone !== 0) {
      plan.skipped.zoned++;
      continue;
    }
    const fe = fes.lookup(e.dst, e.dport, e.proto);
    const translated = e.rsrc !== e.dst || e.rsport !== e.dport;
    if (!fe || !translated) {
      plan.skipped.notService++;
      continue;
    }
    const state = stateOf(e);
    if (state === undefined || e.status & IPS_DYING) {
      plan.skipped.closed++;
      if (e.proto === IPPROTO_TCP) plan.closedInKernel.push({ saddr: e.src, daddr: e.dst, sport: e.sport, dport: e.dport, proto: e.proto });
      continue;
    }
    if (fes.isNodeAddress(e.rsrc)) {
      plan.skipped.hostBackend++;
      continue;
    }
    const life = lifetimeS(e.proto, state, ours);
    const idle = idleS(e, kernel);
    if (idle >= life) {
      plan.skipped.idle++;
      continue;
    }
    const snat = e.rdst !== e.src || e.rdport !== e.sport;
    let flags: number = CtFlags.ADOPTED;
    if (snat) flags |= CtFlags.SNAT;
    if (e.rsrc === e.src) flags |= CtFlags.HAIRPIN;
    if (fe.flags & FeFlags.EXTERNAL) flags |= CtFlags.EXTERNAL;
    const expiresNs = nowNs + BigInt(Math.round((life - idle) * 1e9));
    const base = { expiresNs, createdNs: nowNs, state, flags, svcId: fe.svcId };
    const fwdKey: CtKey = { saddr: e.src, daddr: e.dst, sport: e.sport, dport: e.dport, proto: e.proto };
    const replyKey: CtKey = { saddr: e.rsrc, daddr: e.rdst, sport: e.rsport, dport: e.rdport, proto: e.proto };
    plan.pairs.push({
      reply: [replyKey, { ...base, dir: CtDir.REPLY, natSaddr: e.dst, natSport: e.dport, natDaddr: e.src, natDport: e.sport }],
      fwd: [fwdKey, { ...base, dir: CtDir.FWD, natSaddr: e.rdst, natSport: e.rdport, natDaddr: e.rsrc, natDport: e.rsport }],
    });
  }
  return plan;
}

export interface AdoptionResult {
  seen: number;
  adopted: number;
  /** already in our conntrack (a second pass, or a flow we carry) */
  present: number;
  skipped: AdoptionPlan['skipped'];
  /** our conntrack map was full: the rest stayed with the kernel */
  full: number;
  /** adopted earlier, closed since through the kernel: closed in ours too */
  settled: number;
  ms: number;
  /** the IPv6 share of the figures above (from the kernel's IPv6 table into bpfproxy_ct6) */
  ipv6: { seen: number; adopted: number; present: number; full: number };
}

const EEXIST = 17;

/**
 * Whether this namespace has the kernel's conntrack at all. Without it
 * kube-proxy never NAT'd anything here, and a ctnetlink request would load
 * the conntrack modules as a side effect: so nothing is asked then.
 */
export function kernelConntrackPresent(dir = '/proc/sys/net/netfilter'): boolean {
  return existsSync(`${dir}/nf_conntrack_max`);
}

/**
 * An entry in the way of an adopted one, if it is dead: expired, its peer
 * expired or absent (what the datapath treats as a miss and the GC removes
 * on its next pass; a client that reuses the port of a flow gone quiet
 * meets it). Removed with its peer, so the adopted pair can be written.
 * Returns whether it was dead (and is gone).
 */
function clearDead(maps: { ct: CtMap }, key: CtKey, nowNs: bigint): boolean {
  const v = maps.ct.get(key);
  if (!v) return true;
  if (v.expiresNs >= nowNs) return false;
  const pk = ctPeerKey(key, v);
  const peer = maps.ct.get(pk);
  if (peer && peer.expiresNs >= nowNs) return false;
  if (peer) {
    const back = ctPeerKey(pk, peer);
    if (back.saddr === key.saddr && back.daddr === key.daddr && back.sport === key.sport && back.dport === key.dport) maps.ct.delete(pk);
  }
  maps.ct.delete(key);
  return true;
}

/** Write one entry with BPF_NOEXIST; a dead entry in the way is replaced. 'present': a live one is there. */
function put(maps: { ct: CtMap }, [k, v]: [CtKey, CtValue], nowNs: bigint): 'written' | 'present' {
  for (let attempt = 0; ; attempt++) {
    try {
      maps.ct.set(k, v, BPF_NOEXIST);
      return 'written';
    } catch (e) {
      if (!(e instanceof BpfError) || e.errno !== EEXIST) throw e;
      if (attempt > 0 || !clearDead(maps, k, nowNs)) return 'present';
    }
  }
}

/**
 * Write the pairs into maps.ct (the plan's family's conntrack): an entry already there and alive is ours and
 * stays (BPF_NOEXIST); a dead one is replaced.
 */
export function writeAdoption(maps: { ct: CtMap }, plan: AdoptionPlan): Pick<AdoptionResult, 'adopted' | 'present' | 'full'> {
  const out = { adopted: 0, present: 0, full: 0 };
  for (const [i, { reply, fwd }] of plan.pairs.entries()) {
    try {
      if (put(maps, reply, plan.nowNs) === 'present') {
        out.present++;
        continue;
      }
      if (put(maps, fwd, plan.nowNs) === 'present') {
        maps.ct.delete(reply[0]);
        out.present++;
        continue;
      }
      out.adopted++;
    } catch (e) {
      if (e instanceof BpfError && e.isMapFull) {
        out.full = plan.pairs.length - i;
        break;
      }
      throw e;
    }
  }
  return out;
}

const CLOSED = CtState.FIN_FWD | CtState.FIN_REPLY;

/**
 * Close the adopted entries of ours whose flow the kernel has seen end
 * (plan.closedInKernel): the FINs went through the kernel between the read
 * an entry was adopted from and its write. Left open, such an entry would
 * hold a rollback drain until our established timeout. Returns how many
 * connections were closed.
 */
export function settleClosed(maps: { ct: CtMap }, plan: AdoptionPlan, ours: ConntrackTimeouts): number {
  let n = 0;
  const expiresNs = plan.nowNs + BigInt(Math.round(ours.tcpFinsSeen * 1e6));
  for (const k of plan.closedInKernel) {
    const v = maps.ct.get(k);
    if (!v || v.dir !== CtDir.FWD || !(v.flags & CtFlags.ADOPTED) || v.state & CtState.RST || (v.state & CLOSED) === CLOSED) continue;
    const pk = ctPeerKey(k, v);
    const peer = maps.ct.get(pk);
    maps.ct.set(k, { ...v, state: v.state | CLOSED, expiresNs });
    if (peer) maps.ct.set(pk, { ...peer, state: peer.state | CLOSED, expiresNs });
    n++;
  }
  return n;
}

/** One family's pass: dump, plan, write; logs what an operator must know. Throws when the dump fails. */
function adoptFamily(
  m: FamilyMaps,
  ours: ConntrackTimeouts,
  log: Logger,
  pass: string,
): Pick<AdoptionResult, 'seen' | 'adopted' | 'present' | 'full' | 'settled' | 'skipped'> {
  const plan = planAdoption(kernelEntries(m.family), frontendIndex(m, m.any), native().monotonicNs(), ours, kernelTimeouts());
  const w = writeAdoption(m, plan);
  const settled = settleClosed(m, plan, ours);
  if (w.full) {
    log.warn(
      { pass, family: `IPv${m.family}`, notAdopted: w.full, map: m.ct.name, max: m.ct.maxEntries },
      `conntrack map ${m.ct.name} is full: ${w.full} IPv${m.family} flow(s) kube-proxy's rules carried were not adopted; ` +
        'their TCP connections stay with the kernel, their UDP flows may change backend (raise bpfMapSizeConntrack)',
    );
  }
  if (plan.skipped.hostBackend) {
    log.info(
      { pass, family: `IPv${m.family}`, flows: plan.skipped.hostBackend },
      `${plan.skipped.hostBackend} IPv${m.family} flow(s) to host-network endpoints on this node stay with the kernel's NAT (not adopted)`,
    );
  }
  return { seen: plan.seen, ...w, settled, skipped: plan.skipped };
}

const noSkips = (): AdoptionPlan['skipped'] => ({ notService: 0, closed: 0, idle: 0, hostBackend: 0, zoned: 0 });

/**
 * One adoption pass over both families: dump the kernel's conntrack, plan,
 * write. Never throws: a failure is logged and the takeover goes on (TCP
 * flows then stay with the kernel's NAT; UDP flows may change backend); an
 * IPv6 failure leaves the IPv4 adoption standing, and the reverse. The
 * result sums both families (ipv6: the IPv6 share); undefined when neither
 * could be read.
 */
export function adoptKernelConntrack(maps: AdoptMaps, ours: ConntrackTimeouts, log: Logger, pass: string): AdoptionResult | undefined {
  const t0 = performance.now();
  if (!kernelConntrackPresent()) {
    log.debug({ pass }, 'no kernel conntrack in this network namespace: no kube-proxy flows to adopt');
    return undefined;
  }
  const r: AdoptionResult = {
    seen: 0,
    adopted: 0,
    present: 0,
    full: 0,
    settled: 0,
    skipped: noSkips(),
    ms: 0,
    ipv6: { seen: 0, adopted: 0, present: 0, full: 0 },
  };
  let read = 0;
  for (const m of familyMaps(maps)) {
    try {
      const f = adoptFamily(m, ours, log, pass);
      read++;
      r.seen += f.seen;
      r.adopted += f.adopted;
      r.present += f.present;
      r.full += f.full;
      r.settled += f.settled;
      for (const k of Object.keys(r.skipped) as Array<keyof AdoptionPlan['skipped']>) r.skipped[k] += f.skipped[k];
      if (m.family === 6) r.ipv6 = { seen: f.seen, adopted: f.adopted, present: f.present, full: f.full };
    } catch (e) {
      log.warn(
        { pass, family: `IPv${m.family}`, map: m.ct.name, err: e },
        `could not adopt from the kernel's IPv${m.family} conntrack (${(e as Error).message}): IPv${m.family} flows kube-proxy's ` +
          'rules carried are not adopted; their TCP connections keep working through the kernel, their UDP flows may change backend',
      );
    }
  }
  r.ms = Math.round(performance.now() - t0);
  return read ? r : undefined;
}

/**
 * Before a drain counts what is open: close the adopted entries whose flow
 * the kernel has seen end since the last adoption pass (settleClosed). Never
 * throws; a failure leaves such entries to their timeout.
 */
export function settleAdopted(maps: AdoptMaps, ours: ConntrackTimeouts, log: Logger): number {
  if (!kernelConntrackPresent()) return 0;
  let n = 0;
  for (const m of familyMaps(maps)) {
    try {
      n += settleClosed(m, planAdoption(kernelEntries(m.family), frontendIndex(m, m.any), native().monotonicNs(), ours), ours);
    } catch (e) {
      log.warn(
        { family: `IPv${m.family}`, err: e },
        `could not read the kernel's IPv${m.family} conntrack before draining (${(e as Error).message}); ` +
          'adopted connections count as open until they time out',
      );
    }
  }
  if (n)
    log.info(
      { connections: n },
      `${n} adopted connection(s) ended through the kernel's NAT before adoption finished: closed in bpfproxy's conntrack too`,
    );
  return n;
}
