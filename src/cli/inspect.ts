/** `bpfproxy services|conntrack|status`: what the maps and hooks hold, for an operator. */
import { readSockLinks, readSockStats } from '../dataplane/bpf/sock.js';
import { type Command } from '@commander-js/extra-typings';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { attachedHere, type Attachment } from '../dataplane/bpf/attach.js';
import { xdpAttachedHere } from '../dataplane/bpf/xdp.js';
import {
  conntrackViews,
  flowHasAddress,
  mapFills,
  reasonViews,
  serviceViews,
  tunnelView,
  type ServiceView,
} from '../dataplane/bpf/inspect.js';
import { MAP_NAMES, openPinnedMaps, type DatapathMaps } from '../dataplane/bpf/loader.js';
import { modeNow, type Mode } from '../dataplane/bpf/drain.js';
import { readPinned, TABLE_MAX_ENTRIES } from '../dataplane/bpf/policy-maps.js';

const MODE_TEXT: Record<Exclude<Mode, 'serve'>, string> = {
  drain:
    'draining (bpfEnabled=false): connections through bpfproxy are served until they end or the drain time is up, new ones go to the kernel (kube-proxy); the agent then detaches',
  standby: "standby (taking over): attached, every packet passes untouched until the agent has adopted the kernel's flows",
};
import { pinDirOption, outputOption, stateDirOption } from './options.js';
import { statePaths } from '../agent/lock.js';
import { readTopologyFile } from '../agent/topology-file.js';
import { engineRequest, type EngineStatusReply } from '../dataplane/afxdp/control.js';
import { engineMemoryText } from './engine.js';
import { table } from './table.js';

function withMaps<T>(pinDir: string, fn: (m: DatapathMaps) => T): T {
  let pinned;
  try {
    pinned = openPinnedMaps(pinDir);
  } catch (e) {
    process.stderr.write(`bpfproxy: ${(e as Error).message}\n`);
    process.exit(1);
  }
  try {
    return fn(pinned.maps);
  } finally {
    pinned.close();
  }
}

/** Whether a frontend serves from this node's endpoints only: iTP=Local for a cluster IP, eTP=Local for the rest. */
const usesLocal = (s: ServiceView): boolean => s.policies.includes(s.kind === 'ClusterIP' ? 'iTP=Local' : 'eTP=Local');

/**
 * The TOPOLOGY column: the reason, and what the frontend's policy does with
 * it (topology narrows the Cluster-policy set; a Local policy uses this
 * node's endpoints whatever their hints).
 */
function topologyText(t: { uses: string; why: string; requested?: string }): string {
  const local = t.uses === 'node-local' ? 'Local policy: node-local endpoints, hints apply to Cluster traffic only; cluster set: ' : '';
  return `${local}${t.why}${t.requested ? ` [${t.requested}]` : ''}`;
}

export function addServicesCommand(program: Command): void {
  program
    .command('services')
    .description(
      "each frontend and its backends, as programmed in the maps; for services with topology hints, which endpoints this node uses and why (from the agent's state dir)",
    )
    .addOption(pinDirOption())
    .addOption(stateDirOption())
    .addOption(outputOption())
    .action((o) =>
      withMaps(o.pinDir, (m) => {
        const topo = readTopologyFile(statePaths(o.stateDir, o.pinDir).topology);
        const byPort = new Map('file' in topo ? topo.file.ports.map((p) => [p.servicePort, p]) : []);
        const v = serviceViews(m).map((s) => {
          const t = byPort.get(s.servicePort);
          if (!t) return s;
          const topology = {
            mode: t.mode || 'all',
            uses: usesLocal(s) ? 'node-local' : 'cluster',
            why: t.why,
            ...(t.requested ? { requested: t.requested } : {}),
          };
          return { ...s, topology };
        });
        if (o.output === 'json') return console.log(JSON.stringify(v, null, 2));
        if ('file' in topo) console.log(`Node ${topo.file.node}, zone ${topo.file.zone || '(no topology.kubernetes.io/zone label)'}\n`);
        console.log(
          table(
            ['SERVICE PORT', 'FRONTEND', 'KIND', 'POLICY', 'BACKENDS', 'TOPOLOGY'],
            v.map((s) => [
              s.servicePort,
              s.frontend,
              s.kind,
              [...s.policies, ...(s.affinityTimeout ? [`affinity ${s.affinityTimeout}s`] : [])].join(' ') || '-',
              s.backends.length ? s.backends.map((b) => `${b.addr}${b.local ? ' (local)' : ''}`).join(', ') : '(none: rejects)',
              'topology' in s ? topologyText(s.topology) : '-',
            ]),
          ),
        );
        if ('missing' in topo) console.log(`\n(topology: unknown, ${topo.missing})`);
      }),
    );
}

export function addConntrackCommand(program: Command): void {
  program
    .command('conntrack')
    .description('conntrack entries of service flows')
    .addOption(pinDirOption())
    .addOption(outputOption())
    .option('--service <name>', 'only this service (namespace/name, or namespace/name:port/PROTO)')
    .option('--ip <addr>', 'only flows with this address on either side')
    .option('--proto <proto>', 'tcp, udp or sctp')
    .option('--tunnel', 'only flows carried between nodes (bpfExternalServiceMode Tunnel/DSR)')
    .action((o) =>
      withMaps(o.pinDir, (m) => {
        let v = conntrackViews(m);
        if (o.service) v = v.filter((c) => c.service === o.service || c.service.startsWith(`${o.service}:`));
        if (o.ip) v = v.filter((c) => flowHasAddress(c, String(o.ip)));
        if (o.proto) v = v.filter((c) => c.proto === String(o.proto).toUpperCase());
        if (o.tunnel) v = v.filter((c) => c.tunnel);
        if (o.output === 'json') return console.log(JSON.stringify(v, null, 2));
        console.log(
          table(
            ['PROTO', 'DIR', 'FLOW', 'TRANSLATED TO', 'STATE', 'FLAGS', 'SERVICE', 'TUNNEL (INGRESS -> BACKEND NODE)', 'EXPIRES'],
            v.map((c) => [
              c.proto,
              c.dir,
              `${c.from} -> ${c.to}`,
              `${c.natFrom} -> ${c.natTo}`,
              c.state,
              c.flags.join(',') || '-',
              c.service || '-',
              c.tunnel ? `${c.tunnel.mode} ${c.tunnel.ingressNode} -> ${c.tunnel.backendNode} (${c.tunnel.backend})` : '-',
              `${c.expiresInS}s`,
            ]),
          ),
        );
        console.log(`${v.length} entries`);
      }),
    );
}

/**
 * NetworkPolicy as the pinned maps have it. With policy on the agent always
 * programs at least the WORLD identity; with it off the maps are empty.
 */
function policyStatus(m: DatapathMaps) {
  const p = readPinned(m);
  const largestTable = p.endpoints.reduce((n, e) => Math.max(n, e.entries.length), 0);
  return {
    programmed: p.identities.length > 0,
    generation: p.generation,
    endpoints: p.endpoints.length,
    isolated: m.polState.get({ v: 0 })?.isolated ?? 0,
    identities: p.identities.length,
    largestTable,
    tableMax: TABLE_MAX_ENTRIES,
    tableFillPercent: Math.round((1000 * largestTable) / TABLE_MAX_ENTRIES) / 10,
  };
}

/** Whether any of the datapath's maps is pinned under pinDir (none: the dataplane is off). */
const anyMapPinned = (pinDir: string): boolean => Object.values(MAP_NAMES).some((n) => existsSync(join(pinDir, n)));

const hookLabel = (a: Attachment): string => `${a.hook === 'tcx' ? 'tcx' : 'tc'} ${a.direction}`;

/** What status shows of the AF_XDP engine: its memory and what sizes it; undefined when no agent runs one here. */
type EngineView = { running: true; memory: Extract<EngineStatusReply, { running: true }>['memory'] } | { running: false; reason: string };

async function engineView(stateDir: string, pinDir: string): Promise<EngineView | undefined> {
  const sock = statePaths(stateDir, pinDir).engine;
  if (!existsSync(sock)) return undefined;
  try {
    const r = await engineRequest<EngineStatusReply>(sock, '/stats', 3000);
    return r.running ? { running: true, memory: r.memory } : { running: false, reason: r.reason };
  } catch (e) {
    return { running: false, reason: `its control socket ${sock} does not answer: ${(e as Error).message}` };
  }
}

/** The socket hooks pinned under pinDir and their counters (numbers as text: JSON has no bigint). */
function socketLbView(pinDir: string, m: DatapathMaps) {
  return {
    hooks: readSockLinks(pinDir).links.map((l) => ({ hook: l.hook, cgroupId: String(l.cgroupId), progId: l.progId, linkId: l.linkId })),
    counters: Object.fromEntries(Object.entries(readSockStats(m)).map(([k, v]) => [k, String(v)])),
  };
}

export function addStatusCommand(program: Command): void {
  program
    .command('status')
    .description(
      'attached interfaces (in this network namespace), map fill levels, drops by reason; with the dataplane off (no maps pinned) still what is attached',
    )
    .addOption(pinDirOption())
    .addOption(stateDirOption())
    .addOption(outputOption())
    .action(async (o) => {
      const interfaces = attachedHere(o.pinDir);
      const engine = await engineView(o.stateDir, o.pinDir);
      const printEngine = () => {
        if (!engine) return;
        console.log('\nAF_XDP engine');
        console.log(
          engine.running
            ? `  memory ${engineMemoryText(engine.memory)}`
            : `  not running${'reason' in engine && engine.reason ? `: ${engine.reason}` : ''}`,
        );
      };
      const xdp = xdpAttachedHere(o.pinDir);
      const printXdp = () => {
        console.log('\nXDP acceleration');
        console.log(
          xdp.length
            ? table(
                ['IFACE', 'IFINDEX', 'MODE', 'PROG ID', 'LINK'],
                xdp.map((x) => [x.iface, String(x.ifindex), x.mode, String(x.progId), `${x.linkId}${x.live ? '' : ' (interface gone)'}`]),
              )
            : `  (off: no XDP link pinned under ${o.pinDir}/xdp)`,
        );
      };
      const printInterfaces = () => {
        console.log('Interfaces');
        console.log(
          interfaces.length
            ? table(
                ['IFACE', 'IFINDEX', 'HOOK', 'PROGRAM', 'PROG ID', 'LINK'],
                interfaces.map((i) => [
                  i.iface,
                  String(i.ifindex),
                  hookLabel(i),
                  i.program,
                  String(i.progId),
                  i.hook === 'tcx' ? `${i.linkId}${i.pinned === false ? ' (not pinned here)' : ''}` : '-',
                ]),
              )
            : '  (none attached in this network namespace)',
        );
      };
      if (!anyMapPinned(o.pinDir)) {
        // bpfEnabled=false (or never enabled, or cleaned up): nothing to read
        // in the maps, but what is attached still matters (a rollback to
        // confirm, leftovers to find).
        const note = `no maps are pinned under ${o.pinDir}: the bpfproxy dataplane is off here (bpfEnabled=false, cleaned up, or no agent ran with --pin-dir ${o.pinDir})`;
        const leftover = interfaces.length
          ? `${interfaces.length} bpfproxy program(s) are still attached although the maps are gone: leftovers; "bpfproxy cleanup --pin-dir ${o.pinDir}" removes ours`
          : undefined;
        if (o.output === 'json') {
          console.log(
            JSON.stringify(
              {
                dataplane: 'off',
                note,
                ...(leftover ? { warning: leftover } : {}),
                interfaces,
                xdp,
                policy: null,
                maps: null,
                reasons: null,
                engine: engine ?? null,
              },
              null,
              2,
            ),
          );
          return;
        }
        printInterfaces();
        printXdp();
        console.log(`\nMaps\n  (none: ${note})`);
        if (leftover) console.log(`\nWarning: ${leftover}`);
        return;
      }
      withMaps(o.pinDir, (m) => {
        const socketLb = socketLbView(o.pinDir, m);
        const s = {
          dataplane: 'on',
          mode: modeNow(m),
          interfaces,
          xdp,
          socketLb,
          policy: policyStatus(m),
          externalService: tunnelView(m),
          maps: mapFills(m),
          reasons: reasonViews(m),
          engine: engine ?? null,
        };
        if (o.output === 'json') return console.log(JSON.stringify(s, null, 2));
        if (s.mode !== 'serve') console.log(`Mode: ${MODE_TEXT[s.mode]}\n`);
        printInterfaces();
        printXdp();
        const p = s.policy;
        console.log(
          p.programmed
            ? `\nNetwork policy: on (generation ${p.generation}); ${p.endpoints} endpoint(s), ${p.isolated} isolated; ${p.identities} identities; ` +
                `largest rule table ${p.largestTable} of ${p.tableMax} entries (${p.tableFillPercent}%)`
            : '\nNetwork policy: off (nothing programmed: --network-policy=off, or the agent has not synced policy yet); no pod is isolated',
        );
        const x = s.externalService;
        console.log(
          `\nExternal traffic to endpoints on other nodes (bpfExternalServiceMode): ${x.mode}` +
            (x.local === '0.0.0.0' ? (x.mode === 'SNAT' ? '' : ' (no tunnel address yet: SNAT)') : `, tunnel address ${x.local}`),
        );
        console.log(
          table(
            ['NEW FLOWS SNAT', 'TUNNEL', 'DSR', 'FROM TUNNEL', 'ENCAP PKTS', 'DECAP PKTS', 'DSR REPLIES', 'MOVED', 'MAGLEV MID-FLOW'],
            [
              [
                x.newFlows.SNAT,
                x.newFlows.Tunnel,
                x.newFlows.DSR,
                x.newFromTunnel,
                x.packets.encap,
                x.packets.decap,
                x.packets.dsrReply,
                x.moved,
                x.midflow,
              ].map(String),
            ],
          ),
        );
        console.log('\nSocket load balancing (cgroup hooks)');
        console.log(
          socketLb.hooks.length
            ? table(
                ['HOOK', 'CGROUP ID', 'PROG ID', 'LINK'],
                socketLb.hooks.map((h) => [
                  h.hook,
                  h.cgroupId === '0' ? '0 (cgroup gone)' : h.cgroupId,
                  String(h.progId),
                  String(h.linkId),
                ]),
              ) +
                '\n  ' +
                Object.entries(socketLb.counters)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(', ')
            : '  (off: no socket hooks pinned under this pin dir; --socket-lb host|all attaches them)',
        );
        console.log('\nMaps');
        console.log(
          table(
            ['MAP', 'ENTRIES', 'MAX', 'FILL'],
            s.maps.map((f) => [f.map, String(f.entries), String(f.maxEntries), `${f.percent}%`]),
          ),
        );
        console.log('\nPackets not simply passed, by reason');
        console.log(
          table(
            ['REASON', 'VERDICT', 'PACKETS', 'BYTES', 'MEANING'],
            s.reasons.map((r) => [r.reason, r.verdict, String(r.packets), String(r.bytes), r.help]),
          ),
        );
        printEngine();
      });
    });
}
