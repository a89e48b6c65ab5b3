/** `bpfproxy monitor`: what the datapath does to traffic, as it happens. */
import { InvalidArgumentError, Option, type Command } from '@commander-js/extra-typings';
import { native } from '../native/index.js';
import { MONITOR_SNAP_LEN } from '../dataplane/bpf/codecs.js';
import { openPinnedMaps, type DatapathMaps } from '../dataplane/bpf/loader.js';
import {
  MONITOR_EVENT_TYPES,
  MonitorSession,
  hostPort,
  matches,
  type FlowTuple,
  type MonitorEvent,
  type MonitorEventType,
  type MonitorFilter,
} from '../dataplane/bpf/monitor.js';
import { isIPv4 } from '../net/ip.js';
import { canonicalIpv6 } from '../net/ip6.js';
import { namespaceList, PodAddresses, podList, POD_REFRESH_MS } from './monitor-pods.js';
import { PcapWriter } from '../net/pcap.js';
import { duration, outputOption, pinDirOption, port, positiveInt } from './options.js';
import { formatDuration } from '../config/duration.js';

/** --type: flow (created and closed), drop, policy, or the exact event types. */
function parseTypes(v: string): MonitorEventType[] {
  const out = new Set<MonitorEventType>();
  for (const t of v.split(',').map((x) => x.trim())) {
    if (t === 'flow') {
      out.add('flow-new');
      out.add('flow-close');
    } else if ((MONITOR_EVENT_TYPES as readonly string[]).includes(t)) out.add(t as MonitorEventType);
    else throw new InvalidArgumentError(`--type: "${t}" is not one of flow, drop, policy, ${MONITOR_EVENT_TYPES.join(', ')}`);
  }
  return [...out];
}

/** --ip: IPv4, or IPv6 in the one text form events carry (RFC 5952). */
const ipArg = (v: string): string => {
  if (isIPv4(v)) return v;
  const six = canonicalIpv6(v);
  if (!six) throw new InvalidArgumentError(`--ip: "${v}" is not an IPv4 or IPv6 address`);
  return six;
};

/** Names of what events refer to by number: services (svc_names), interfaces (this namespace). */
export class Names {
  private svc = new Map<number, string>();
  private ifaces = new Map<number, string>();
  constructor(private readonly maps: Pick<DatapathMaps, 'svcNames'>) {}
  service(id: number): string | undefined {
    if (!this.svc.has(id)) {
      let name: string | undefined;
      try {
        name = this.maps.svcNames.get({ v: id })?.name;
      } catch {
        name = undefined;
      }
      if (name !== undefined) this.svc.set(id, name);
      return name;
    }
    return this.svc.get(id);
  }
  iface(index: number): string {
    if (index === 0) return '-';
    if (!this.ifaces.has(index)) for (const i of native().interfaces()) this.ifaces.set(i.index, i.name);
    return this.ifaces.get(index) ?? `if${index}`;
  }
}

const flow = (t: FlowTuple): string => `${t.proto} ${hostPort(t.src, t.sport)} -> ${hostPort(t.dst, t.dport)}`;
const addr = (t: FlowTuple): string => hostPort(t.dst, t.dport);

/** Wall time of an event: bpf_ktime_get_ns() is CLOCK_MONOTONIC. */
export function wallClock(): (tsNs: number) => number {
  const wall = Date.now();
  const mono = Number(native().monotonicNs());
  return (ts) => wall + (ts - mono) / 1e6;
}

const timeOfDay = (ms: number): string => {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const us = Math.round((ms % 1000) * 1000) % 1_000_000;
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(us, 6)}`;
};

export function describe(ev: MonitorEvent, names: Names): string {
  switch (ev.type) {
    case 'flow-new':
    case 'flow-close': {
      const svc = names.service(ev.svcId) ?? `svc ${ev.svcId}`;
      const flags = ev.flags.length ? ` [${ev.flags.join(',')}]` : '';
      const nat = ev.nat.src !== ev.tuple.src || ev.nat.sport !== ev.tuple.sport ? ` from ${hostPort(ev.nat.src, ev.nat.sport)}` : '';
      const head = ev.type === 'flow-new' ? '' : `closed by ${ev.closedBy} after ${formatSeconds(ev.durationNs ?? 0)}, `;
      return `${head}=> ${addr(ev.nat)}${nat}  ${svc}${flags}`;
    }
    case 'drop':
      return `${ev.reason}: ${ev.dropped ? 'dropped' : ev.verdict === 'reject' ? 'rejected (answer sent back)' : ev.verdict === 'icmp' ? 'ICMP error sent back' : 'passed to the stack'}`;
    case 'policy':
      return `${ev.verdict} ${ev.direction ?? '?'} rule ${ev.ruleId || '(default)'} endpoint ${ev.endpoint}`;
  }
}

const formatSeconds = (ns: number): string => `${(ns / 1e9).toFixed(3)}s`;

export function tableLine(ev: MonitorEvent, names: Names, wall: (ts: number) => number): string {
  const where = `${names.iface(ev.ifindex)}${ev.hook ? `(${ev.hook})` : ''}`;
  return `${timeOfDay(wall(ev.tsNs))}  ${ev.type.padEnd(10)}  ${where.padEnd(14)}  ${flow(ev.tuple).padEnd(50)}  ${describe(ev, names)}`;
}

export function jsonLine(ev: MonitorEvent, names: Names, wall: (ts: number) => number): Record<string, unknown> {
  const base = {
    time: new Date(wall(ev.tsNs)).toISOString(),
    type: ev.type,
    iface: names.iface(ev.ifindex),
    ifindex: ev.ifindex,
    hook: ev.hook,
    ...ev.tuple,
    len: ev.pktLen,
  };
  switch (ev.type) {
    case 'flow-new':
    case 'flow-close':
      return {
        ...base,
        nat: { src: ev.nat.src, sport: ev.nat.sport, dst: ev.nat.dst, dport: ev.nat.dport },
        service: names.service(ev.svcId) ?? null,
        svcId: ev.svcId,
        flags: ev.flags,
        ...(ev.type === 'flow-close' ? { closedBy: ev.closedBy, durationMs: (ev.durationNs ?? 0) / 1e6 } : {}),
      };
    case 'drop':
      return { ...base, reason: ev.reason, verdict: ev.verdict, dropped: ev.dropped, answered: ev.answered };
    case 'policy':
      return { ...base, verdict: ev.verdict, direction: ev.direction, ruleId: ev.ruleId, endpoint: ev.endpoint };
  }
}

export function addMonitorCommand(program: Command): void {
  program
    .command('monitor')
    .description(
      'stream what the datapath does, as it happens: flows created and closed, drops and rejects with their reason, policy verdicts; ' +
        'nothing is emitted (and it costs nothing) while no monitor runs',
    )
    .addOption(pinDirOption())
    .addOption(outputOption())
    .addOption(
      new Option('--type <list>', 'only these events: flow (created and closed), drop (every reason), policy; comma separated').argParser(
        parseTypes,
      ),
    )
    .option('--ip <addr>', 'only packets with this address (IPv4 or IPv6) on either side, before or after translation', ipArg)
    .option(
      '--pod <namespace/name>',
      'only packets with an address of this pod on either side, before or after translation; repeatable or comma separated. ' +
        'Pods of this node, named in the pinned maps by the agent with --network-policy=on (pods of other nodes are not named there: use --ip); ' +
        `read again every ${POD_REFRESH_MS / 1000}s, so a pod that starts later is matched then`,
      podList,
    )
    .option(
      '--namespace <ns>',
      "only packets with an address of one of this namespace's pods (as --pod: this node's pods, with --network-policy=on); repeatable or comma separated",
      namespaceList,
    )
    .option('--port <n>', 'only packets with this port on either side, before or after translation', port('--port'))
    .addOption(new Option('--proto <proto>', 'only this protocol').choices(['tcp', 'udp', 'sctp', 'icmp']))
    .addOption(
      new Option('--verdict <verdict>', 'only drop events with this outcome, or policy events with this verdict').choices([
        'drop',
        'reject',
        'pass',
        'icmp',
        'allow',
        'deny',
      ]),
    )
    .option('--service <name>', 'only flows of this service (namespace/name, or namespace/name:port/PROTO)')
    .option('--pcap <file>', `also write the matching packets' first ${MONITOR_SNAP_LEN} bytes to this pcap file (tcpdump -r reads it)`)
    .option('--count <n>', 'stop after this many matching events', positiveInt('--count'))
    .addOption(new Option('--for <duration>', 'stop after this long (e.g. 30s, 5m)').argParser(duration('--for')))
    .addOption(
      new Option('--stats-every <duration>', 'how often lost events are reported (on stderr), when there are any')
        .argParser(duration('--stats-every'))
        .default(5000, formatDuration(5000)),
    )
    .action((o) => {
      let pinned: ReturnType<typeof openPinnedMaps>;
      try {
        pinned = openPinnedMaps(o.pinDir);
      } catch (e) {
        process.stderr.write(`bpfproxy monitor: ${(e as Error).message}\n`);
        process.exit(1);
      }
      const maps = pinned.maps;
      const names = new Names(maps);
      const wall = wallClock();
      const filter: MonitorFilter = {
        ...(o.type ? { types: o.type } : {}),
        ...(o.ip ? { ip: o.ip } : {}),
        ...(o.port !== undefined ? { port: o.port } : {}),
        ...(o.proto ? { proto: o.proto } : {}),
        ...(o.verdict ? { verdict: o.verdict } : {}),
        ...(o.service ? { service: o.service } : {}),
      };
      const byPod =
        o.pod?.length || o.namespace?.length
          ? new PodAddresses(maps, { pods: o.pod ?? [], namespaces: o.namespace ?? [] }, (l) =>
              process.stderr.write(`bpfproxy monitor: ${l}\n`),
            )
          : undefined;
      if (byPod) filter.addresses = byPod.refresh();
      const pcap = o.pcap ? new PcapWriter(o.pcap, MONITOR_SNAP_LEN) : undefined;
      let shown = 0;
      let reportedLost = 0;
      let session: MonitorSession | undefined;
      let done = false;
      const timers: NodeJS.Timeout[] = [];
      const finish = (code: number, why?: string) => {
        if (done) return;
        done = true;
        for (const t of timers) clearInterval(t);
        const received = session?.received ?? 0;
        const lost = session?.lost() ?? 0;
        session?.close();
        pcap?.close();
        pinned.close();
        if (why) process.stderr.write(`bpfproxy monitor: ${why}\n`);
        process.stderr.write(
          `bpfproxy monitor: ${shown} events shown, ${received} received, ${lost} lost (ring full)` +
            (pcap ? `; ${pcap.packets} packets written to ${pcap.path}` : '') +
            '\n',
        );
        process.exitCode = code;
        // stdout may still be draining into a pipe: exit once it has
        process.stdout.write('', () => process.exit(code));
      };
      const onEvents = (events: MonitorEvent[]) => {
        if (done) return;
        const out: string[] = [];
        for (const ev of events) {
          if (!matches(ev, filter, (id) => names.service(id))) continue;
          out.push(o.output === 'json' ? JSON.stringify(jsonLine(ev, names, wall)) : tableLine(ev, names, wall));
          pcap?.write(ev.captured, ev.pktLen, wall(ev.tsNs));
          shown++;
          if (o.count !== undefined && shown >= o.count) break;
        }
        if (out.length) process.stdout.write(out.join('\n') + '\n');
        if (o.count !== undefined && shown >= o.count) finish(0);
      };
      try {
        session = MonitorSession.open(maps, onEvents, { onError: (e) => finish(1, e.message) });
      } catch (e) {
        pcap?.close();
        pinned.close();
        process.stderr.write(`bpfproxy monitor: ${(e as Error).message}\n`);
        process.exit(1);
      }
      process.on('SIGINT', () => finish(0));
      process.on('SIGTERM', () => finish(0));
      if (o.output !== 'json') {
        process.stdout.write(`${'TIME'.padEnd(15)}  ${'EVENT'.padEnd(10)}  ${'IFACE(HOOK)'.padEnd(14)}  ${'PACKET'.padEnd(50)}  WHAT\n`);
      }
      process.stderr.write(
        `bpfproxy monitor: listening (slot ${session.slot} of ${maps.monitorCtl.name} under ${o.pinDir}); Ctrl-C stops\n`,
      );
      timers.push(
        setInterval(() => {
          const lost = session?.lost() ?? 0;
          if (lost > reportedLost) {
            process.stderr.write(
              `bpfproxy monitor: ${lost} events lost so far: the ring filled faster than this monitor read it (filters apply here, after the ring: they do not lower what the datapath sends)\n`,
            );
            reportedLost = lost;
          }
        }, o.statsEvery),
      );
      if (byPod) timers.push(setInterval(() => (filter.addresses = byPod.refresh()), POD_REFRESH_MS));
      if (o.for !== undefined) timers.push(setInterval(() => finish(0), o.for));
    });
}
