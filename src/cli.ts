#!/usr/bin/env node
/** bpfproxy: the agent and the operator commands. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { rmSync, readdirSync, existsSync } from 'node:fs';
import { Agent } from './agent/agent.js';
import { DEFAULT_DATA_IFACES, DEFAULT_POD_IFACES, attachedHere, detachAll } from './dataplane/bpf/attach.js';
import { DEFAULT_DATAPATH, DEFAULT_MAP_SIZES, parseCtTimeouts, parseDuration } from './dataplane/bpf/config.js';
import { conntrackViews, mapFills, reasonViews, serviceViews } from './dataplane/bpf/inspect.js';
import { openPinnedMaps } from './dataplane/bpf/loader.js';
import { makeLogger } from './log.js';
import { table } from './cli/table.js';
import { DIST, REPO_ROOT, labDown, labSpec, labUp } from './lab/lab.js';
import { runDemo } from './lab/demo.js';

const DEFAULT_PIN_DIR = '/sys/fs/bpf/bpfproxy';

const regex = (what: string) => (v: string): RegExp => {
  try {
    return new RegExp(v);
  } catch (e) {
    throw new InvalidArgumentError(`${what}: ${(e as Error).message}`);
  }
};
const positiveInt = (what: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive whole number`);
  return n;
};
const duration = (what: string) => (v: string): number => {
  try {
    return parseDuration(v, what) * 1000;
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};

const program = new Command('bpfproxy')
  .description('eBPF kube-proxy replacement: Kubernetes services in TC programs, driven from TypeScript')
  .showHelpAfterError();

const pinDirOption = () => new Option('--pin-dir <path>', 'where the maps are pinned').default(DEFAULT_PIN_DIR);
const outputOption = () => new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table');

program
  .command('agent')
  .description('serve Services on this node and keep serving them as they change')
  .requiredOption('--manifests <dir>', 'directory of Service and EndpointSlice YAML manifests')
  .option('--node <name>', 'this node\'s name (decides which endpoints are local)', hostname())
  .option('--data-ifaces <regex>', 'uplink interfaces (NodePort, LoadBalancer, external IPs)', regex('--data-ifaces'), new RegExp(DEFAULT_DATA_IFACES))
  .option('--pod-ifaces <regex>', 'pod-facing host interfaces', regex('--pod-ifaces'), new RegExp(DEFAULT_POD_IFACES))
  .addOption(pinDirOption())
  .option('--bpf-dir <dir>', 'where the compiled BPF objects are', join(REPO_ROOT, 'bpf', '.output'))
  .option('--min-sync-period <duration>', 'minimum time between syncs (bpfKubeProxyMinSyncPeriod)', duration('--min-sync-period'), 1000)
  .option('--sync-period <duration>', 'full resync interval', duration('--sync-period'), 30_000)
  .option('--conntrack-timeouts <list>', 'bpfConntrackTimeouts, e.g. "TCPEstablished=1h,UDPTimeout=60s"', '')
  .option('--map-size-conntrack <n>', 'bpfMapSizeConntrack', positiveInt('--map-size-conntrack'), DEFAULT_MAP_SIZES.conntrack)
  .option('--map-size-nat-frontend <n>', 'bpfMapSizeNATFrontend', positiveInt('--map-size-nat-frontend'), DEFAULT_MAP_SIZES.natFrontend)
  .option('--map-size-nat-backend <n>', 'bpfMapSizeNATBackend', positiveInt('--map-size-nat-backend'), DEFAULT_MAP_SIZES.natBackend)
  .option('--map-size-nat-affinity <n>', 'bpfMapSizeNATAffinity', positiveInt('--map-size-nat-affinity'), DEFAULT_MAP_SIZES.natAffinity)
  .option('--log-level <level>', 'trace, debug, info, warn, error', 'info')
  .action(async (o) => {
    const log = makeLogger(o.logLevel);
    let ctTimeouts;
    try {
      ctTimeouts = parseCtTimeouts(o.conntrackTimeouts);
    } catch (e) {
      log.fatal((e as Error).message);
      process.exit(2);
    }
    let agent: Agent;
    try {
      agent = await Agent.start({
        manifests: o.manifests,
        nodeName: o.node,
        dataIfaces: o.dataIfaces,
        podIfaces: o.podIfaces,
        pinDir: o.pinDir,
        bpfDir: o.bpfDir,
        minSyncPeriodMs: o.minSyncPeriod,
        syncPeriodMs: o.syncPeriod,
        datapath: {
          ...DEFAULT_DATAPATH,
          ctTimeouts,
          mapSizes: { conntrack: o.mapSizeConntrack, natFrontend: o.mapSizeNatFrontend, natBackend: o.mapSizeNatBackend, natAffinity: o.mapSizeNatAffinity },
        },
      }, log);
    } catch (e) {
      log.fatal({ err: e }, `agent could not start: ${(e as Error).message}`);
      process.exit(1);
    }
    const shutdown = (sig: string) => {
      log.info({ signal: sig }, 'stopping; the dataplane keeps serving (run "bpfproxy cleanup" to remove it)');
      agent.stop();
      process.exit(0);
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });

function withMaps<T>(pinDir: string, fn: (m: ReturnType<typeof openPinnedMaps>) => T): T {
  let maps;
  try {
    maps = openPinnedMaps(pinDir);
  } catch (e) {
    process.stderr.write(`bpfproxy: ${(e as Error).message}\n`);
    process.exit(1);
  }
  try {
    return fn(maps);
  } finally {
    maps.close();
  }
}

program
  .command('services')
  .description('each frontend and its backends, as programmed in the maps')
  .addOption(pinDirOption())
  .addOption(outputOption())
  .action((o) => withMaps(o.pinDir, (m) => {
    const v = serviceViews(m);
    if (o.output === 'json') return console.log(JSON.stringify(v, null, 2));
    console.log(table(['SERVICE PORT', 'FRONTEND', 'KIND', 'POLICY', 'BACKENDS'], v.map((s) => [
      s.servicePort, s.frontend, s.kind,
      [...s.policies, ...(s.affinityTimeout ? [`affinity ${s.affinityTimeout}s`] : [])].join(' ') || '-',
      s.backends.length ? s.backends.map((b) => `${b.addr}${b.local ? ' (local)' : ''}`).join(', ') : '(none: rejects)',
    ])));
  }));

program
  .command('conntrack')
  .description('conntrack entries of service flows')
  .addOption(pinDirOption())
  .addOption(outputOption())
  .option('--service <name>', 'only this service (namespace/name, or namespace/name:port/PROTO)')
  .option('--ip <addr>', 'only flows with this address on either side')
  .option('--proto <proto>', 'tcp or udp')
  .action((o) => withMaps(o.pinDir, (m) => {
    let v = conntrackViews(m);
    if (o.service) v = v.filter((c) => c.service === o.service || c.service.startsWith(`${o.service}:`));
    if (o.ip) v = v.filter((c) => [c.from, c.to, c.natFrom, c.natTo].some((a) => a.startsWith(`${o.ip}:`)));
    if (o.proto) v = v.filter((c) => c.proto === String(o.proto).toUpperCase());
    if (o.output === 'json') return console.log(JSON.stringify(v, null, 2));
    console.log(table(['PROTO', 'DIR', 'FLOW', 'TRANSLATED TO', 'STATE', 'FLAGS', 'SERVICE', 'EXPIRES'], v.map((c) => [
      c.proto, c.dir, `${c.from} -> ${c.to}`, `${c.natFrom} -> ${c.natTo}`, c.state, c.flags.join(',') || '-', c.service || '-', `${c.expiresInS}s`,
    ])));
    console.log(`${v.length} entries`);
  }));

program
  .command('status')
  .description('attached interfaces (in this network namespace), map fill levels, drops by reason')
  .addOption(pinDirOption())
  .addOption(outputOption())
  .action((o) => withMaps(o.pinDir, (m) => {
    const s = { interfaces: attachedHere(), maps: mapFills(m), reasons: reasonViews(m) };
    if (o.output === 'json') return console.log(JSON.stringify(s, null, 2));
    console.log('Interfaces');
    console.log(s.interfaces.length
      ? table(['IFACE', 'IFINDEX', 'PROGRAM', 'PROG ID'], s.interfaces.map((i) => [i.iface, String(i.ifindex), i.program, String(i.progId)]))
      : '  (none attached in this network namespace)');
    console.log('\nMaps');
    console.log(table(['MAP', 'ENTRIES', 'MAX', 'FILL'], s.maps.map((f) => [f.map, String(f.entries), String(f.maxEntries), `${f.percent}%`])));
    console.log('\nPackets not simply passed, by reason');
    console.log(table(['REASON', 'VERDICT', 'PACKETS', 'BYTES', 'MEANING'], s.reasons.map((r) => [r.reason, r.verdict, String(r.packets), String(r.bytes), r.help])));
  }));

program
  .command('cleanup')
  .description('detach our programs from every interface in this network namespace and unpin the maps')
  .addOption(pinDirOption())
  .action((o) => {
    const log = makeLogger('info');
    const detached = detachAll(log);
    let unpinned = 0;
    if (existsSync(o.pinDir)) {
      unpinned = readdirSync(o.pinDir).length;
      rmSync(o.pinDir, { recursive: true, force: true });
    }
    console.log(`detached from ${detached.length} interface(s)${detached.length ? ` (${detached.join(', ')})` : ''}; removed ${unpinned} pinned map(s) from ${o.pinDir}`);
  });

const lab = program.command('lab').description('a local namespace "cluster" to try bpfproxy on');
lab.command('up').option('--prefix <p>', 'namespace name prefix', 'bpxlab').description('build the lab namespaces and start echo servers in the pods')
  .action((o) => {
    labDown(o.prefix);
    labUp(labSpec(o.prefix));
    console.log(`lab ${o.prefix} is up: nodes ${labSpec(o.prefix).nodes.map((n) => n.ns).join(', ')}, client ${labSpec(o.prefix).client.ns}`);
  });
lab.command('down').option('--prefix <p>', 'namespace name prefix', 'bpxlab').description('remove the lab namespaces and pins')
  .action((o) => {
    const gone = labDown(o.prefix);
    console.log(`removed ${gone.length} namespace(s)`);
  });
lab.command('demo').option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .option('--manifests <dir>', 'manifests to serve', join(REPO_ROOT, 'manifests', 'examples'))
  .description('lab up, agents on both nodes, traffic to each service type, lab down')
  .action(async (o) => {
    const ok = await runDemo(o.prefix, o.manifests);
    process.exit(ok ? 0 : 1);
  });

void DIST;
program.parseAsync().catch((e: Error) => {
  process.stderr.write(`bpfproxy: ${e.message}\n`);
  process.exit(1);
});
