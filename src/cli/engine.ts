/**
 * `bpfproxy engine stats|trace`: the AF_XDP vector engine of the agent on
 * this pin dir, through its control socket in the state dir (root only).
 * stats is VPP's `show runtime`: per graph node, calls, vectors, packets,
 * packets per vector and ns per packet; then drops per reason, sessions,
 * interfaces and memory. trace prints the next N packets' paths.
 */
import { type Command, InvalidArgumentError, Option } from '@commander-js/extra-typings';
import { statePaths } from '../agent/lock.js';
import { engineRequest, TRACE_MAX, type EngineStatusReply } from '../dataplane/afxdp/control.js';
import type { EngineStatus } from '../dataplane/afxdp/runtime.js';
import type { EngineTraceRecord } from '../native/index.js';
import { duration, outputOption, pinDirOption, stateDirOption } from './options.js';
import { table } from './table.js';

const fail = (msg: string): never => {
  process.stderr.write(`bpfproxy engine: ${msg}\n`);
  process.exit(1);
};

const num = (n: number): string => Math.round(n).toLocaleString('en-US');
const fix = (n: number, d: number): string => (Number.isFinite(n) ? n.toFixed(d) : '-');
const mib = (b: number): string => `${(b / (1 << 20)).toFixed(1)} MiB`;

/** The engine's memory, each part with what it is sized from. */
export function engineMemoryText(m: EngineStatus['memory']): string {
  return (
    `${mib(m.totalBytes)}: UMEM ${mib(m.umemBytes)} (${m.workers} worker(s) × ${m.framesPerWorker} frames × ${m.frameBytes / 1024} KiB), ` +
    `sessions ${mib(m.sessionsBytes)} (${num(m.sessionEntries)} entries: bpfMapSizeConntrack), ` +
    `IPv6 sessions ${mib(m.sessions6Bytes ?? 0)} (a quarter as many entries), table ${mib(m.tableBytes)} (the services in force)`
  );
}

/** The policy node's state, one line. */
export function enginePolicyText(s: EngineStatus): string {
  const p = s.engine.policy;
  const denied = (s.engine.reasons['policy-denied'] ?? 0) + (s.engine.reasons['policy-no-table'] ?? 0);
  if (s.policyError !== undefined) return `NOT LOADED (${s.policyError}): no frontend is steered to the engine`;
  if (!p) return s.engine.policyRequired ? 'not loaded: the policy node drops what it gets' : 'off (not enforced by the engine)';
  if (!p.isolated) return `generation ${p.generation}, no endpoint isolated: nothing to enforce`;
  return (
    `generation ${p.generation} (the BPF path's), ${num(p.isolated)} isolated endpoint(s), ${num(p.prefixes)} prefixes, ` +
    `${num(p.tables)} table(s) of ${num(p.entries)} entries (${mib(p.bytes)}); ${num(denied)} packet(s) denied`
  );
}

/** The stats as an operator reads them. */
export function formatEngineStatus(s: EngineStatus): string {
  const out: string[] = [];
  const e = s.engine;
  out.push(
    `AF_XDP engine: ${s.ports.length} interface(s), ${e.queues} queue worker(s), vectors of up to ${e.vector}; table generation ${e.table?.generation ?? '-'} (${e.table?.frontends ?? 0} frontends, ${s.steering.frontends} steered to the engine)`,
  );
  out.push('');
  out.push(
    table(
      ['NODE', 'CALLS', 'VECTORS', 'PACKETS', 'PACKETS/VECTOR', 'NS/PACKET'],
      e.nodes.map((n) => [
        n.name,
        num(n.calls),
        num(n.vectors),
        num(n.packets),
        n.vectors ? fix(n.packets / n.vectors, 1) : '-',
        n.packets ? fix(n.ns / n.packets, 1) : '-',
      ]),
    ),
  );
  const reasons = Object.entries(e.reasons).filter(([, v]) => v > 0);
  out.push('');
  out.push(
    reasons.length
      ? table(
          ['REASON', 'PACKETS'],
          reasons.map(([k, v]) => [k, num(v)]),
        )
      : 'no packet dropped or rejected',
  );
  out.push('');
  out.push(
    table(
      ['INTERFACE', 'XDP', 'MODE', 'QUEUES', 'RX', 'TX', 'KERNEL DROPS'],
      s.ports.map((p) => [
        p.name,
        p.xdp,
        p.stats?.zerocopy ? 'zero-copy' : 'copy',
        String(p.queues),
        num(p.stats?.rx ?? 0),
        num(p.stats?.tx ?? 0),
        num((p.stats?.rxDropped ?? 0) + (p.stats?.rxRingFull ?? 0)),
      ]),
    ),
  );
  out.push('');
  out.push(
    `sessions: ${num(e.sessions.live)} of ${num(e.sessions.limit)} entries (${mib(e.sessions.bytes)}${e.sessions.hugePages ? ', huge pages' : ''}); ` +
      `conntrack mirror: ${s.steering.conntrackMirror ? `${num(e.conntrack.exported)} written, ${num(e.conntrack.exportErrors)} failed, ${num(e.conntrack.adopted)} adopted from the BPF path` : 'off'}`,
  );
  out.push(`network policy: ${enginePolicyText(s)}`);
  out.push(`memory: ${engineMemoryText(s.memory)}`);
  out.push(
    `neighbours: ${s.neighbours.resolved} backend(s) resolved` +
      (s.neighbours.unresolved.length
        ? `, ${s.neighbours.unresolved.length} being resolved (${s.neighbours.unresolved.slice(0, 5).join(', ')})`
        : '') +
      (s.neighbours.elsewhere.length
        ? `, ${s.neighbours.elsewhere.length} not behind an engine interface (their frontends stay on the BPF path)`
        : ''),
  );
  if (s.lastTableError) out.push(`last table refused: ${s.lastTableError}`);
  return out.join('\n');
}

export function formatTrace(records: EngineTraceRecord[]): string {
  if (!records.length) return 'no packet came through the engine in the time given';
  return records
    .map(
      (r) =>
        `#${r.seq} worker ${r.worker} port ${r.rxPort}: ${r.in} (${r.proto === 6 ? 'TCP' : r.proto === 17 ? 'UDP' : `proto ${r.proto}`}, ${r.len} bytes)\n` +
        `    ${r.path.join(' -> ')}\n` +
        `    ${r.outPort !== null ? `out port ${r.outPort}: ${r.out ?? ''}` : `dropped: ${r.reason}`}${r.reason === 'rejected' ? ' (rejected: no endpoints)' : ''}${r.session !== 'none' ? ` [${r.session} session]` : ''}`,
    )
    .join('\n');
}

function socketOf(o: { stateDir: string; pinDir: string }): string {
  return statePaths(o.stateDir, o.pinDir).engine;
}

export function addEngineCommand(program: Command): void {
  const engine = program.command('engine').description("the AF_XDP vector engine of this node's agent (--dataplane afxdp)");
  engine
    .command('stats')
    .description("per graph node: calls, vectors, packets, packets/vector, ns/packet (VPP's show runtime); drops, sessions, interfaces")
    .addOption(pinDirOption())
    .addOption(stateDirOption())
    .addOption(outputOption())
    .action(async (o) => {
      const s = await engineRequest<EngineStatusReply>(socketOf(o), '/stats', 5000).catch((e: Error) => fail(e.message));
      if (o.output === 'json') return console.log(JSON.stringify(s, null, 2));
      if (!s.running) return fail(`the AF_XDP engine is not running: ${s.reason}`);
      console.log(formatEngineStatus(s));
    });
  engine
    .command('trace')
    .description('the path of the next N packets through the graph nodes')
    .argument('<n>', `packets to trace (1-${TRACE_MAX})`, (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > TRACE_MAX) throw new InvalidArgumentError(`must be a whole number from 1 to ${TRACE_MAX}`);
      return n;
    })
    .addOption(new Option('--wait <duration>', 'how long to wait for them').argParser(duration('--wait')).default(10_000, '10s'))
    .addOption(pinDirOption())
    .addOption(stateDirOption())
    .addOption(outputOption())
    .action(async (n, o) => {
      const r = await engineRequest<{ records: EngineTraceRecord[] }>(
        socketOf(o),
        `/trace?n=${n}&wait=${Math.min(o.wait, 60_000)}`,
        o.wait + 5000,
      ).catch((e: Error) => fail(e.message));
      if (o.output === 'json') return console.log(JSON.stringify(r.records, null, 2));
      console.log(formatTrace(r.records));
    });
}
