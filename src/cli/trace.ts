/** `bpfproxy trace`: what the datapath would do with one packet, without sending one. */
import { InvalidArgumentError, Option, type Command } from '@commander-js/extra-typings';
import { join } from 'node:path';
import { native } from '../native/index.js';
import { attachedHere, type Attachment } from '../dataplane/bpf/attach.js';
import { openPinnedMaps, PROGRAMS, type DatapathMaps } from '../dataplane/bpf/loader.js';
import { explainTrace, openTracer, programSettings, type TracePacket, type TraceReport, type TraceRole } from '../dataplane/bpf/trace.js';
import { isIPv4 } from '../net/ip.js';
import { TCP, frame, frame6 } from '../net/frames.js';
import { canonicalIpv6, ipv6Bytes } from '../net/ip6.js';
import { hostPort } from '../dataplane/bpf/monitor.js';
import { INSTALL_ROOT } from '../paths.js';
import { outputOption, pinDirOption, port } from './options.js';

/** IPv4, or IPv6 in its one text form (RFC 5952, as the maps' codecs write it). */
const ipArg = (what: string) => (v: string) => {
  if (isIPv4(v)) return v;
  const six = canonicalIpv6(v);
  if (!six) throw new InvalidArgumentError(`${what}: "${v}" is not an IPv4 or IPv6 address`);
  return six;
};

function ipPort(v: string): { ip: string; port: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(v.trim()) ?? /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(v.trim());
  const p = m ? Number(m[2]) : NaN;
  const ip = m ? (isIPv4(m[1]!) ? m[1] : canonicalIpv6(m[1]!)) : undefined;
  if (!ip || !Number.isInteger(p) || p < 1 || p > 65535)
    throw new InvalidArgumentError(`--to: "${v}" is not IPv4:PORT or [IPv6]:PORT (e.g. 10.96.0.10:80, [fd00:96::a]:80)`);
  return { ip, port: p };
}

const FLAG_BITS: Record<string, number> = { syn: TCP.SYN, ack: TCP.ACK, fin: TCP.FIN, rst: TCP.RST, psh: TCP.PSH };
function tcpFlags(v: string): number {
  let f = 0;
  for (const x of v.split(',').map((s) => s.trim().toLowerCase())) {
    const bit = FLAG_BITS[x];
    if (bit === undefined) throw new InvalidArgumentError(`--tcp-flags: "${x}" is not one of ${Object.keys(FLAG_BITS).join(', ')}`);
    f |= bit;
  }
  return f;
}
const flagNames = (f: number): string =>
  Object.entries(FLAG_BITS)
    .filter(([, b]) => f & b)
    .map(([n]) => n.toUpperCase())
    .join(',');

const ROLE_OF: Record<string, TraceRole> = { [PROGRAMS.fromPod.name]: 'fromPod', [PROGRAMS.fromData.name]: 'fromData' };
const HOOK_OF: Record<TraceRole, 'pod' | 'data'> = { fromPod: 'pod', fromData: 'data' };

/** The pod interface whose routes hold ip (bpf/lib/pod.h's source check), longest prefix first. */
function podInterfaceOf(maps: DatapathMaps, ip: string): number | undefined {
  if (ip.includes(':')) return podInterfaceOf6(maps, ip);
  const n = (a: string) => a.split('.').reduce((x, o) => ((x << 8) | Number(o)) >>> 0, 0);
  let best: { ifindex: number; len: number } | undefined;
  for (const [k, v] of maps.podSrcs.entries()) {
    const len = k.prefixlen - 32;
    if (len < 0 || !v.v) continue;
    const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
    if ((n(k.addr) & mask) === (n(ip) & mask) && (!best || len > best.len)) best = { ifindex: k.ifindex, len };
  }
  return best?.ifindex;
}

/** As podInterfaceOf(), IPv6 (bpfproxy_pod_srcs6). */
function podInterfaceOf6(maps: DatapathMaps, ip: string): number | undefined {
  const want = ipv6Bytes(ip);
  const within = (addr: string, len: number): boolean => {
    const a = ipv6Bytes(addr);
    for (let bit = 0; bit < len; bit += 8) {
      const bits = Math.min(8, len - bit);
      const mask = (0xff << (8 - bits)) & 0xff;
      if ((a[bit / 8]! & mask) !== (want[bit / 8]! & mask)) return false;
    }
    return true;
  };
  let best: { ifindex: number; len: number } | undefined;
  for (const [k, v] of maps.podSrcs6.entries()) {
    const len = k.prefixlen - 32;
    if (len < 0 || len > 128 || !v.v) continue;
    if (within(k.addr, len) && (!best || len > best.len)) best = { ifindex: k.ifindex, len };
  }
  return best?.ifindex;
}

interface Where {
  role: TraceRole;
  ifindex: number;
  attachment?: Attachment;
  notes: string[];
}

function chooseHook(o: { iface?: string; hook?: 'pod' | 'data'; from: string }, maps: DatapathMaps, pinDir: string): Where {
  const ingress = attachedHere(pinDir).filter((a) => a.direction === 'ingress' && ROLE_OF[a.program]);
  const notes: string[] = [];
  if (o.iface) {
    const i = native()
      .interfaces()
      .find((x) => x.name === o.iface);
    if (!i) throw new Error(`--iface ${o.iface}: no such interface in this network namespace (run trace where the agent runs)`);
    const a = ingress.find((x) => x.ifindex === i.index);
    const role = a ? ROLE_OF[a.program]! : o.hook === 'pod' ? 'fromPod' : o.hook === 'data' ? 'fromData' : undefined;
    if (!role) throw new Error(`--iface ${o.iface}: no bpfproxy program on its ingress; say which hook to trace with --hook pod|data`);
    if (a && o.hook && HOOK_OF[role] !== o.hook)
      throw new Error(
        `--iface ${o.iface} runs the ${HOOK_OF[role]} program, not the ${o.hook} one: leave out --hook, or name another interface`,
      );
    if (!a) notes.push(`no bpfproxy program runs on ${o.iface}: traced with the ${o.hook} program as it would run there`);
    return { role, ifindex: i.index, ...(a ? { attachment: a } : {}), notes };
  }
  const podIf = podInterfaceOf(maps, o.from);
  if (o.hook === 'pod' || (!o.hook && podIf !== undefined)) {
    if (podIf === undefined) {
      notes.push(`${o.from} is not routed to a pod interface here: traced as from an interface without the pod source check`);
      const a = ingress.find((x) => ROLE_OF[x.program] === 'fromPod');
      return { role: 'fromPod', ifindex: 0, ...(a ? { attachment: a } : {}), notes };
    }
    const a = ingress.find((x) => x.ifindex === podIf);
    return { role: 'fromPod', ifindex: podIf, ...(a ? { attachment: a } : {}), notes };
  }
  const a = ingress.find((x) => ROLE_OF[x.program] === 'fromData');
  if (!a) notes.push('no data interface runs the bpfproxy program here: traced as from an unnamed interface');
  return { role: 'fromData', ifindex: a?.ifindex ?? 0, ...(a ? { attachment: a } : {}), notes };
}

export interface TraceOutput {
  packet: TracePacket & { flags?: string };
  hook: 'pod' | 'data';
  iface: string | null;
  settings: string;
  notes: string[];
  steps: TraceReport['lines'];
  action: TraceReport['action'];
}

export function addTraceCommand(program: Command): void {
  program
    .command('trace')
    .description(
      'run one synthetic packet through the running programs over the live maps and show each decision ' +
        '(conntrack, frontend, backend, NAT, route, policy, the final action); nothing is sent and no map is written',
    )
    .requiredOption('--from <ip>', "the packet's source address, IPv4 or IPv6 (a local pod's address picks its interface)", ipArg('--from'))
    .requiredOption(
      '--to <ip:port>',
      "the packet's destination, IPv4:PORT or [IPv6]:PORT (a service address, a node address for NodePort, ...)",
      ipPort,
    )
    .addOption(new Option('--proto <proto>', 'protocol (sctp: an INIT)').choices(['tcp', 'udp', 'sctp'] as const).default('tcp' as const))
    .option('--sport <n>', 'source port', port('--sport'), 40000)
    .addOption(
      new Option('--tcp-flags <list>', 'TCP flags (syn opens a flow; ack follows an existing one)')
        .argParser(tcpFlags)
        .default(TCP.SYN, 'syn'),
    )
    .addOption(new Option('--hook <hook>', 'which program: pod (from pods) or data (from uplinks)').choices(['pod', 'data'] as const))
    .option('--iface <name>', 'the interface the packet comes in on (its program and settings)')
    .addOption(pinDirOption())
    .option('--bpf-dir <dir>', 'where the compiled BPF objects are', join(INSTALL_ROOT, 'bpf', '.output'))
    .addOption(outputOption())
    .action(async (o) => {
      let pinned: ReturnType<typeof openPinnedMaps>;
      try {
        pinned = openPinnedMaps(o.pinDir);
      } catch (e) {
        process.stderr.write(`bpfproxy trace: ${(e as Error).message}\n`);
        process.exit(1);
      }
      if (o.from.includes(':') !== o.to.ip.includes(':')) {
        process.stderr.write(`bpfproxy trace: --from ${o.from} and --to ${o.to.ip} are not of one family: give both IPv4 or both IPv6\n`);
        pinned.close();
        process.exit(2);
      }
      try {
        const where = chooseHook(
          { ...(o.iface ? { iface: o.iface } : {}), ...(o.hook ? { hook: o.hook } : {}), from: o.from },
          pinned.maps,
          o.pinDir,
        );
        const names = new Map(
          native()
            .interfaces()
            .map((i) => [i.index, i.name]),
        );
        const ifname = (i: number) => names.get(i) ?? `ifindex ${i}`;
        const pkt: TracePacket = {
          proto: o.proto,
          src: o.from,
          sport: o.sport,
          dst: o.to.ip,
          dport: o.to.port,
          ...(o.proto === 'tcp' ? { tcpFlags: o.tcpFlags } : {}),
        };
        const live = where.attachment ? programSettings(where.attachment.progId) : undefined;
        let settings = where.attachment
          ? `those of the program running on ${where.attachment.iface} (id ${where.attachment.progId})`
          : 'the BPF object’s defaults (no running program to take them from)';
        let tracer;
        try {
          tracer = await openTracer(o.bpfDir, o.pinDir, live ? { rodataImage: live.rodata } : {});
        } catch (e) {
          if (!live || !/not the same build/.test((e as Error).message)) throw e;
          tracer = await openTracer(o.bpfDir, o.pinDir);
          settings = `the BPF object’s defaults: the program on ${where.attachment?.iface} is of another build`;
        }
        try {
          const progName = PROGRAMS[where.role].name;
          if (live && tracer.tags[progName] && tracer.tags[progName] !== live.tag) {
            where.notes.push(
              `the running ${progName} (tag ${live.tag}) is not the one in ${o.bpfDir} (tag ${tracer.tags[progName]}): these are the decisions of the latter`,
            );
          }
          const l4 = { proto: o.proto, sport: o.sport, dport: o.to.port, flags: o.tcpFlags };
          const raw = tracer.run(
            where.role,
            o.from.includes(':') ? frame6({ src: o.from, dst: o.to.ip }, l4) : frame({ src: o.from, dst: o.to.ip }, l4),
            where.ifindex,
          );
          const report = explainTrace(pkt, raw, pinned.maps, ifname);
          const out: TraceOutput = {
            packet: { ...pkt, ...(o.proto === 'tcp' ? { flags: flagNames(o.tcpFlags) } : {}) },
            hook: HOOK_OF[where.role],
            iface: where.ifindex ? ifname(where.ifindex) : null,
            settings,
            notes: where.notes,
            steps: report.lines,
            action: report.action,
          };
          print(out, o.output);
        } finally {
          tracer.close();
        }
      } catch (e) {
        process.stderr.write(`bpfproxy trace: ${(e as Error).message}\n`);
        process.exitCode = 1;
      } finally {
        pinned.close();
      }
    });
}

function print(out: TraceOutput, format: string): void {
  if (format === 'json') {
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  const p = out.packet;
  const lines = [
    `Packet    ${p.proto.toUpperCase()} ${hostPort(p.src, p.sport)} -> ${hostPort(p.dst, p.dport)}${p.flags ? ` [${p.flags}]` : ''}, ` +
      `into ${out.iface ?? 'an unnamed interface'} (${out.hook} program)`,
    `Settings  ${out.settings}`,
    ...out.notes.map((n) => `Note      ${n}`),
    ...out.steps.map((s, i) => `${String(i + 1).padStart(2)}  ${s.step.padEnd(10)}${s.text}`),
    `Action    ${out.action.text}`,
    'Nothing was sent and no map was written.',
  ];
  console.log(lines.join('\n'));
}
