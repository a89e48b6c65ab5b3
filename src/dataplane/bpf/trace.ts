/**
 * `bpfproxy trace`: one synthetic packet through the datapath's programs
 * over the running agent's maps, each decision told, nothing written.
 *
 * A second copy of the object is loaded in trace mode (cfg_trace = 1, see
 * bpf/lib/trace.h) over the pinned maps (libbpf adopts each pin by name, as
 * the agent's own reload does): every write to a shared map is skipped in
 * that copy, and each decision lands in a map of its own (bpfproxy_trace),
 * read back after one BPF_PROG_RUN. The copy takes the settings of the
 * program that runs on the interface (its .rodata, read by map id) so that
 * it decides as that program would; it is unloaded when the trace is done.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BpfError, native, type NativeBpfObject } from '../../native/index.js';
import { BackendFlags, CtDir, CtFlags, FeFlags, TRACE_MAX_STEPS, TraceKind, traceBuf, u32Key, type TraceStepValue } from './codecs.js';
import { ctState } from './inspect.js';
import { BPF_OBJECT, MAP_NAMES, PROGRAMS, type DatapathMaps } from './loader.js';
import { hostPort, protoName } from './monitor.js';
import { readIpv6 } from '../../net/ip6.js';
import { REASONS } from './reasons.js';

export const TRACE_MAP = 'bpfproxy_trace';
export type TraceRole = 'fromPod' | 'fromData';

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;

/** struct __sk_buff with ingress_ifindex and ifindex set (offsets 36 and 40), as BPF_PROG_RUN takes it. */
function skbCtx(ifindex: number): Buffer {
  const b = Buffer.alloc(192);
  b.writeUInt32LE(ifindex, 36);
  b.writeUInt32LE(ifindex, 40);
  return b;
}

/** The settings (.rodata) of a loaded program, read through the map ids it uses; undefined if it has none. */
export function programSettings(progId: number): { rodata: Buffer; tag: string } | undefined {
  const n = native();
  const prog = n.progById(progId);
  try {
    const info = n.progInfo(prog);
    for (const id of info.mapIds) {
      const m = n.mapById(id);
      try {
        if (!m.name.endsWith('.rodata')) continue;
        const v = n.mapLookup(m, u32Key.encode({ v: 0 }));
        if (v) return { rodata: v, tag: info.tag };
      } finally {
        m.close();
      }
    }
    return undefined;
  } finally {
    prog.close();
  }
}

export interface RawTrace {
  retval: number;
  /** the packet as the program left it */
  out: Buffer;
  steps: TraceStepValue[];
  /** more decisions were made than the trace map holds */
  truncated: boolean;
}

export interface Tracer {
  /** Tags of the trace copy's programs, by name (a program of the same build has the same tag). */
  readonly tags: Record<string, string>;
  run(role: TraceRole, frame: Buffer, ifindex: number): RawTrace;
  close(): void;
}

/**
 * Load the trace copy over the maps pinned in pinDir. Fails, creating no
 * pin, when any of the agent's maps is not pinned there.
 */
export async function openTracer(bpfDir: string, pinDir: string, opts: { rodataImage?: Buffer } = {}): Promise<Tracer> {
  const n = native();
  const maxEntries: Record<string, number> = {};
  for (const name of Object.values(MAP_NAMES)) {
    const path = join(pinDir, name);
    if (!existsSync(path)) {
      throw new Error(
        `no pinned map at ${path}: is an agent running with --pin-dir ${pinDir}? (a trace runs over the agent's maps and creates none)`,
      );
    }
    const h = n.objGet(path);
    try {
      maxEntries[name] = h.maxEntries;
    } finally {
      h.close();
    }
  }
  const path = join(bpfDir, BPF_OBJECT);
  let obj: NativeBpfObject;
  try {
    obj = await n.loadObject(path, {
      pinRoot: pinDir,
      rodata: { cfg_trace: Buffer.from([1]) },
      ...(opts.rodataImage ? { rodataImage: opts.rodataImage } : {}),
      maxEntries,
    });
  } catch (e) {
    if (e instanceof BpfError) {
      throw new Error(
        `loading ${path} in trace mode over the maps in ${pinDir} failed (${e.code}): ` +
          'a trace needs the BPF object of the running agent’s version (its maps must have the same layout)' +
          `\n${e.message}`,
        { cause: e },
      );
    }
    throw e;
  }
  try {
    const progs = new Map(obj.programs().map((p) => [p.name, p.fd]));
    const traceMap = obj.maps().find((m) => m.name === TRACE_MAP);
    if (!traceMap) throw new Error(`${path} has no ${TRACE_MAP} map: it was built without trace mode (rebuild with "make bpf")`);
    const tags: Record<string, string> = {};
    for (const [name, fd] of progs) tags[name] = n.progInfo(fd).tag;
    const key = u32Key.encode({ v: 0 });
    const zero = Buffer.alloc(traceBuf.size);
    return {
      tags,
      run(role, frame, ifindex) {
        const fd = progs.get(PROGRAMS[role].name);
        if (fd === undefined) throw new Error(`${path} has no program ${PROGRAMS[role].name}`);
        n.mapUpdate(traceMap.fd, key, zero);
        const r = n.progTestRun(fd, frame, ifindex ? { ctx: skbCtx(ifindex) } : {});
        const buf = n.mapLookup(traceMap.fd, key);
        const t = traceBuf.decode(buf ?? zero);
        return {
          retval: r.retval,
          out: r.data,
          steps: t.step.slice(0, Math.min(t.count, TRACE_MAX_STEPS)),
          truncated: t.count > TRACE_MAX_STEPS,
        };
      },
      close: () => obj.close(),
    };
  } catch (e) {
    obj.close();
    throw e;
  }
}

// ---- what the steps mean ---------------------------------------------------

export interface TracePacket {
  /** sctp: an INIT (what opens an association) */
  proto: 'tcp' | 'udp' | 'sctp';
  src: string;
  sport: number;
  dst: string;
  dport: number;
  tcpFlags?: number;
}

export interface TraceLine {
  step: 'conntrack' | 'frontend' | 'backend' | 'nat' | 'route' | 'reason' | 'policy' | 'note';
  text: string;
  data?: Record<string, unknown>;
}

export interface TraceAction {
  action: 'pass' | 'drop' | 'redirect' | 'reject' | 'answer' | `tc action ${number}`;
  text: string;
}

export interface TraceReport {
  lines: TraceLine[];
  action: TraceAction;
}

/** What the explanation reads (never writes) besides the steps. */
export type TraceMaps = Pick<DatapathMaps, 'svcNames' | 'slots' | 'affinity' | 'slots6' | 'affinity6' | 'podIfs'>;

const u32ip = (w: number): string => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(w >>> 0);
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
};
/** An IPv6 address from four words as the step carries them (net order, read as little-endian u32s). */
const ip6OfWords = (w: readonly number[]): string => {
  const b = Buffer.alloc(16);
  for (let k = 0; k < 4; k++) b.writeUInt32LE((w[k] ?? 0) >>> 0, 4 * k);
  return readIpv6(b);
};
const ctFlagNames = (f: number): string[] =>
  [
    f & CtFlags.SNAT ? 'snat' : '',
    f & CtFlags.HAIRPIN ? 'hairpin' : '',
    f & CtFlags.EXTERNAL ? 'external' : '',
    f & CtFlags.HOST_BE ? 'host-backend' : '',
  ].filter(Boolean);
const feKind = (flags: number): string =>
  flags & FeFlags.NODEPORT ? 'NodePort' : flags & FeFlags.EXTERNAL ? 'LoadBalancer/externalIP' : 'ClusterIP';

const FIB_RESULTS: Record<number, string> = {
  1: 'blackhole route',
  2: 'unreachable route',
  3: 'prohibited route',
  4: 'not forwarded (for this host, or no route)',
  5: 'forwarding disabled on the interface',
  6: 'unsupported route (lwt)',
  7: 'neighbour not resolved yet',
  8: 'fragmentation needed',
};

/**
 * The decisions of one traced packet in words, with the final action.
 * ifname names interfaces of the namespace the trace ran in.
 */
export function explainTrace(pkt: TracePacket, raw: RawTrace, maps: TraceMaps, ifname: (i: number) => string): TraceReport {
  const lines: TraceLine[] = [];
  const svcName = (id: number): string => {
    try {
      return maps.svcNames.get({ v: id })?.name ?? `service id ${id}`;
    } catch {
      return `service id ${id}`;
    }
  };
  const proto = pkt.proto === 'tcp' ? 6 : pkt.proto === 'sctp' ? 132 : 17;
  let lastReason: { name: string; dropped: boolean; verdict: string; help: string } | undefined;
  let fib: { rc: number; ifindex: number; looked: boolean } | undefined;
  let frontend: { svcId: number; affinity: number } | undefined;
  for (let i = 0; i < raw.steps.length; i++) {
    const s = raw.steps[i]!;
    const [b0 = 0, b1 = 0, b2 = 0] = s.b;
    const [w0 = 0, w1 = 0, w2 = 0, w3 = 0, w4 = 0] = s.w;
    // IPv6 (bpf/lib/monitor6.h): the step's addresses follow it as ADDR6 steps, in the order of its address words
    const six: string[] = [];
    while (raw.steps[i + 1]?.kind === TraceKind.ADDR6) six.push(ip6OfWords(raw.steps[++i]!.w));
    const ip = (k: number, w: number): string => six[k] ?? u32ip(w);
    switch (s.kind) {
      case TraceKind.CT_HIT: {
        const dir = b0 === CtDir.FWD ? 'forward' : 'reply';
        const flags = ctFlagNames(b2);
        lines.push({
          step: 'conntrack',
          text:
            `hit: the ${dir} entry of a flow of ${svcName(w0)}, state ${ctState(proto, b1)}` +
            `${flags.length ? `, ${flags.join(', ')}` : ''}; rewritten to ${hostPort(ip(0, w1), w3)} -> ${hostPort(ip(1, w2), w4)}` +
            ' (trace mode leaves its state and expiry as they are)',
          data: {
            hit: true,
            dir,
            state: ctState(proto, b1),
            flags,
            service: svcName(w0),
            to: { src: ip(0, w1), sport: w3, dst: ip(1, w2), dport: w4 },
          },
        });
        break;
      }
      case TraceKind.CT_MISS:
        lines.push({ step: 'conntrack', text: 'miss: no flow known for this tuple', data: { hit: false } });
        break;
      case TraceKind.NO_FRONTEND:
        lines.push({
          step: 'frontend',
          text: `none: ${hostPort(pkt.dst, pkt.dport)}/${protoName(proto)} is not a service address here`,
          data: { found: false },
        });
        break;
      case TraceKind.FRONTEND: {
        const [svcId, setId, cluster, local] = [w0, w1, w2, w3];
        const flags = w4 & 0xffff;
        const affinity = w4 >>> 16;
        frontend = { svcId, affinity };
        const slots = b0 === 6 ? maps.slots6 : maps.slots;
        const show = (k: number) => {
          const b = slots.get({ setId, index: k });
          return b ? `${hostPort(b.addr, b.port)}${b.flags & BackendFlags.LOCAL ? ' (local)' : ''}` : '(missing)';
        };
        const clusterSet = Array.from({ length: cluster }, (_, i) => show(i));
        const localSet = Array.from({ length: local }, (_, i) => show(cluster + i));
        const policies = [
          flags & FeFlags.EXT_LOCAL ? 'externalTrafficPolicy Local' : '',
          flags & FeFlags.INT_LOCAL ? 'internalTrafficPolicy Local' : '',
          affinity ? `ClientIP affinity ${affinity}s` : '',
        ].filter(Boolean);
        lines.push({
          step: 'frontend',
          text:
            `${svcName(svcId)} (${feKind(flags)}${policies.length ? `; ${policies.join(', ')}` : ''}): ` +
            (cluster ? `${cluster} backend${cluster === 1 ? '' : 's'}: ${clusterSet.join(', ')}` : 'no endpoints') +
            (local && flags & (FeFlags.EXT_LOCAL | FeFlags.INT_LOCAL) ? `; on this node: ${localSet.join(', ')}` : ''),
          data: {
            found: true,
            service: svcName(svcId),
            kind: feKind(flags),
            policies,
            backends: clusterSet,
            localBackends: localSet,
            setId,
          },
        });
        break;
      }
      case TraceKind.BACKEND: {
        const reason = REASONS[b0];
        if (b0 !== 0) {
          lines.push({
            step: 'backend',
            text: `none chosen: ${reason?.name ?? `reason ${b0}`}`,
            data: { chosen: null, reason: reason?.name ?? b0 },
          });
          break;
        }
        const be = hostPort(ip(0, w0), w1);
        let how = b1 ? 'at random among the node-local endpoints' : 'at random';
        if (frontend?.affinity) {
          const a = (six.length ? maps.affinity6 : maps.affinity).get({ svcId: frontend.svcId, client: pkt.src });
          const fresh = a && native().monotonicNs() - a.lastUsedNs < BigInt(frontend.affinity) * 1_000_000_000n;
          if (fresh && hostPort(a.backend.addr, a.backend.port) === be) how = 'by ClientIP affinity (this client’s earlier choice)';
        }
        lines.push({
          step: 'backend',
          text: `${be}${b2 & BackendFlags.LOCAL ? ' (on this node)' : ''}, chosen ${how}${how.startsWith('at random') ? '; another packet may get another' : ''}`,
          data: { chosen: be, local: (b2 & BackendFlags.LOCAL) !== 0, how },
        });
        break;
      }
      case TraceKind.NAT: {
        const flags = ctFlagNames(b0);
        lines.push({
          step: 'nat',
          text:
            `${hostPort(pkt.src, pkt.sport)} -> ${hostPort(pkt.dst, pkt.dport)} becomes ${hostPort(ip(0, w0), w1)} -> ${hostPort(ip(1, w2), w3)}` +
            `${flags.length ? ` (${flags.join(', ')})` : ''}; conntrack would get the flow's two entries (a trace writes none)`,
          data: { to: { src: ip(0, w0), sport: w1, dst: ip(1, w2), dport: w3 }, flags },
        });
        break;
      }
      case TraceKind.FIB: {
        const rc = w0 | 0;
        fib = { rc, ifindex: w1, looked: b0 !== 0 };
        if (!b0) {
          lines.push({ step: 'route', text: 'FIB forwarding is off (bpfFibRedirect): the stack forwards it', data: { lookedUp: false } });
          break;
        }
        const text =
          rc === 0
            ? `out of ${ifname(w1)}`
            : rc === 7
              ? `out of ${ifname(w1)}, ${FIB_RESULTS[7]} (the kernel resolves it)`
              : rc === 8
                ? `${FIB_RESULTS[8]}: next hop MTU ${w2}`
                : rc < 0
                  ? `the route lookup failed (${native().errnoName(-rc)}): the stack routes it`
                  : (FIB_RESULTS[rc] ?? `lookup result ${rc}`);
        lines.push({ step: 'route', text, data: { lookedUp: true, result: rc, ifindex: w1, iface: ifname(w1), mtu: w2 } });
        break;
      }
      case TraceKind.REASON: {
        const r = REASONS[b0];
        lastReason = {
          name: r?.name ?? `reason ${b0}`,
          dropped: b1 !== 0,
          verdict: b1 ? 'drop' : (r?.verdict ?? 'pass'),
          help: r?.help ?? '',
        };
        lines.push({
          step: 'reason',
          text: `${lastReason.name}: ${lastReason.dropped ? 'dropped' : lastReason.verdict} — ${lastReason.help} (counted by the live programs; not by a trace)`,
          data: { reason: lastReason.name, dropped: lastReason.dropped, verdict: lastReason.verdict },
        });
        break;
      }
      case TraceKind.POLICY:
        lines.push({
          step: 'policy',
          text: `${b0 === 1 ? 'allow' : b0 === 2 ? 'deny' : `verdict ${b0}`} (${b1 === 1 ? 'ingress' : b1 === 2 ? 'egress' : '?'}), rule ${w0 || '(default)'}, endpoint ${w1}`,
          data: { verdict: b0 === 1 ? 'allow' : b0 === 2 ? 'deny' : b0, direction: b1, ruleId: w0, endpoint: w1 },
        });
        break;
      default:
        lines.push({ step: 'note', text: `unknown trace step ${s.kind} (a BPF object newer than this command?)` });
    }
  }
  if (raw.truncated) lines.push({ step: 'note', text: `more than ${TRACE_MAX_STEPS} decisions: the rest are not shown` });
  return { lines, action: finalAction(raw.retval, lastReason, fib, maps, ifname, pkt) };
}

function finalAction(
  retval: number,
  reason: { name: string; dropped: boolean; verdict: string } | undefined,
  fib: { rc: number; ifindex: number; looked: boolean } | undefined,
  maps: TraceMaps,
  ifname: (i: number) => string,
  pkt: TracePacket,
): TraceAction {
  if (retval === TC_ACT_SHOT) return { action: 'drop', text: `dropped${reason ? `: ${reason.name}` : ''}` };
  if (retval === TC_ACT_REDIRECT) {
    if (reason && !reason.dropped && reason.verdict === 'reject') {
      return {
        action: 'reject',
        text: `rejected: ${pkt.proto === 'tcp' ? 'a TCP RST' : 'an ICMP port unreachable'} goes back out of the interface it came in on`,
      };
    }
    if (reason && !reason.dropped && reason.verdict === 'icmp') {
      return { action: 'answer', text: `answered with ICMP (${reason.name}) back out of the interface it came in on` };
    }
    if (fib) {
      let into: boolean;
      try {
        into = maps.podIfs.get({ ifindex: fib.ifindex }) !== undefined;
      } catch {
        into = false;
      }
      const how = into
        ? `into the pod behind ${ifname(fib.ifindex)} (bpf_redirect_peer)`
        : fib.rc === 7
          ? `out of ${ifname(fib.ifindex)} (bpf_redirect_neigh)`
          : `out of ${ifname(fib.ifindex)} (bpf_redirect)`;
      return { action: 'redirect', text: `redirected ${how}` };
    }
    return { action: 'redirect', text: 'redirected' };
  }
  if (retval === TC_ACT_OK) {
    if (reason) return { action: 'pass', text: `passed to the stack: ${reason.name}` };
    if (fib && (!fib.looked || (fib.rc !== 0 && fib.rc !== 7)))
      return { action: 'pass', text: 'passed to the stack, translated: the kernel routes it' };
    return { action: 'pass', text: 'passed to the stack untouched' };
  }
  return { action: `tc action ${retval}`, text: `the program returned ${retval}` };
}
