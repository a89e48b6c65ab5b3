#!/usr/bin/env node
/** bpfproxy: the agent and the operator commands. */
import { Command, InvalidArgumentError, Option } from '@commander-js/extra-typings';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { Agent } from './agent/agent.js';
import { runCleanup } from './agent/cleanup.js';
import { DEFAULT_STATE_DIR } from './agent/lock.js';
import {
  DEFAULT_DATA_IFACES,
  DEFAULT_POD_IFACES,
  TC_ATTACH_MODES,
  attachedHere,
  resolveAttachMode,
  type Attachment,
} from './dataplane/bpf/attach.js';
import {
  LISTEN_DEFAULTS,
  formatBindAddress,
  parseBindAddress,
  resolveBindAddress,
  type BindAddress,
  type BindSpec,
} from './health/bind-address.js';
import { DEFAULT_MAP_SIZES, parseCtTimeouts, parseDuration } from './dataplane/bpf/config.js';
import { CALICO_DEFAULTS, type AgentConfig } from './config/felix.js';
import {
  DEFAULT_MAX_FRONTENDS_PER_SERVICE,
  DEFAULT_NODE_PORT_RANGE,
  formatPortRange,
  parseCidrList,
  parsePortRange,
  type ServicePolicy,
} from './config/services.js';
import { conntrackViews, mapFills, reasonViews, serviceViews } from './dataplane/bpf/inspect.js';
import { MAP_NAMES, openPinnedMaps, type DatapathMaps } from './dataplane/bpf/loader.js';
import { makeLogger } from './log.js';
import type { LocalResults } from './bench/local.js';
import { DEFAULT_MAX_FILE_BYTES } from './sources/manifests.js';
import { table } from './cli/table.js';
import { DIST, REPO_ROOT, labDown, labSpec, labUp } from './lab/lab.js';
import { runDemo } from './lab/demo.js';

const DEFAULT_PIN_DIR = '/sys/fs/bpf/bpfproxy';

const regex =
  (what: string) =>
  (v: string): RegExp => {
    try {
      return new RegExp(v);
    } catch (e) {
      throw new InvalidArgumentError(`${what}: ${(e as Error).message}`);
    }
  };
const positiveInt =
  (what: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive whole number`);
    return n;
  };
/** A duration in ms as a user writes it on the command line: 1s, 30s, 5m, 250ms. */
const formatMs = (ms: number): string =>
  ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
const duration =
  (what: string) =>
  (v: string): number => {
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

const bool =
  (what: string) =>
  (v: string): boolean => {
    if (v === 'true') return true;
    if (v === 'false') return false;
    throw new InvalidArgumentError(`${what} must be true or false`);
  };
const port =
  (what: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isInteger(n) || n < 0 || n > 65535)
      throw new InvalidArgumentError(`${what} must be a port number (0 turns it off)`);
    return n;
  };
const bindAddress =
  (what: string) =>
  (v: string): BindSpec => {
    try {
      return parseBindAddress(what, v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
const stateDirOption = () =>
  new Option(
    '--state-dir <dir>',
    "where the pin dir's lock and the record of the clsact qdiscs we created are kept (a hostPath in Kubernetes)",
  ).default(DEFAULT_STATE_DIR);

program
  .command('agent')
  .description('serve Services on this node and keep serving them as they change')
  .option('--manifests <dir>', 'serve the Service/EndpointSlice/FelixConfiguration YAML in this directory')
  .option(
    '--manifest-max-file-size <bytes>',
    'larger manifest files are not read (reported; their last good objects kept)',
    positiveInt('--manifest-max-file-size'),
    DEFAULT_MAX_FILE_BYTES,
  )
  .option('--kubeconfig <path>', 'watch the Kubernetes API with this kubeconfig (default without --manifests: in-cluster config)')
  .option('--node <name>', "this node's name (decides which endpoints are local)", process.env.NODENAME ?? hostname())
  .option(
    '--bpf-enabled <bool>',
    'own the dataplane before any FelixConfiguration says so (default: true with --manifests, false with the API, as Calico)',
    bool('--bpf-enabled'),
  )
  .option('--data-ifaces <regex>', 'bpfDataIfacePattern: uplinks where NodePort, LoadBalancer and external IPs arrive', DEFAULT_DATA_IFACES)
  .option('--l3-ifaces <regex>', 'bpfL3IfacePattern: extra L3/tunnel devices treated as uplinks', '')
  .addOption(
    new Option('--pod-ifaces <regex>', 'pod-facing host interfaces')
      .argParser(regex('--pod-ifaces'))
      .default(new RegExp(DEFAULT_POD_IFACES), JSON.stringify(DEFAULT_POD_IFACES)),
  )
  .addOption(
    new Option(
      '--tc-attach <mode>',
      'how the programs sit on the TC hooks: tcx links (Linux 6.6+, pinned under the pin dir), cls_bpf filters in a clsact qdisc, or auto (tcx where the kernel has it)',
    )
      .choices(TC_ATTACH_MODES)
      .default('auto'),
  )
  .addOption(pinDirOption())
  .option('--bpf-dir <dir>', 'where the compiled BPF objects are', join(REPO_ROOT, 'bpf', '.output'))
  .addOption(
    new Option('--min-sync-period <duration>', 'bpfKubeProxyMinSyncPeriod: minimum time between syncs')
      .argParser(duration('--min-sync-period'))
      .default(CALICO_DEFAULTS.bpfKubeProxyMinSyncPeriod, formatMs(CALICO_DEFAULTS.bpfKubeProxyMinSyncPeriod)),
  )
  .addOption(
    new Option('--sync-period <duration>', 'full resync interval').argParser(duration('--sync-period')).default(30_000, formatMs(30_000)),
  )
  .option('--conntrack-timeouts <list>', 'bpfConntrackTimeouts, e.g. "TCPEstablished=1h,UDPTimeout=60s"', '')
  .option('--map-size-conntrack <n>', 'bpfMapSizeConntrack', positiveInt('--map-size-conntrack'), DEFAULT_MAP_SIZES.conntrack)
  .option('--map-size-nat-frontend <n>', 'bpfMapSizeNATFrontend', positiveInt('--map-size-nat-frontend'), DEFAULT_MAP_SIZES.natFrontend)
  .option('--map-size-nat-backend <n>', 'bpfMapSizeNATBackend', positiveInt('--map-size-nat-backend'), DEFAULT_MAP_SIZES.natBackend)
  .option('--map-size-nat-affinity <n>', 'bpfMapSizeNATAffinity', positiveInt('--map-size-nat-affinity'), DEFAULT_MAP_SIZES.natAffinity)
  .option(
    '--service-node-port-range <range>',
    "the API server's --service-node-port-range: nodePort and healthCheckNodePort must fall in it",
    formatPortRange(DEFAULT_NODE_PORT_RANGE),
  )
  .addOption(
    new Option('--external-ip-cidrs <list>', 'comma-separated CIDRs externalIPs and LoadBalancer ingress IPs must fall in').default(
      '',
      "any address but the node's own",
    ),
  )
  .option(
    '--allow-node-address-external-ips',
    "let an externalIP or LoadBalancer IP be one of this node's addresses (it then captures that port of the node: CVE-2020-8554)",
    false,
  )
  .option(
    '--max-frontends-per-service <n>',
    'frontends (address x port) one Service may have; the rest is refused with a problem',
    positiveInt('--max-frontends-per-service'),
    DEFAULT_MAX_FRONTENDS_PER_SERVICE,
  )
  .option(
    '--healthz-bind-address <ip[:port]>',
    `kube-proxy's /healthz, served while bpfEnabled; the port is bpfKubeProxyHealthzPort (FelixConfiguration may change it); empty: off (default ${formatBindAddress(LISTEN_DEFAULTS.healthz)})`,
    bindAddress('--healthz-bind-address'),
  )
  .option('--healthz-port <port>', 'the port of --healthz-bind-address (0: off)', port('--healthz-port'))
  .option(
    '--metrics-bind-address <ip[:port]>',
    `Prometheus /metrics; 0.0.0.0:PORT or [::]:PORT for every address; empty: off (default ${formatBindAddress(LISTEN_DEFAULTS.metrics)})`,
    bindAddress('--metrics-bind-address'),
  )
  .option('--metrics-port <port>', 'the port of --metrics-bind-address (0: off)', port('--metrics-port'))
  .option(
    '--health-bind-address <ip[:port]>',
    `the agent's /liveness and /readiness; empty: off (default ${formatBindAddress(LISTEN_DEFAULTS.health)})`,
    bindAddress('--health-bind-address'),
  )
  .option('--health-port <port>', 'the port of --health-bind-address (0: off)', port('--health-port'))
  .addOption(stateDirOption())
  .option('--log-level <level>', 'trace, debug, info, warn, error', 'info')
  .action(async (o) => {
    const log = makeLogger(o.logLevel);
    const fail: (msg: string) => never = (msg) => {
      log.fatal(msg);
      process.exit(2);
    };
    let ctTimeouts;
    try {
      ctTimeouts = parseCtTimeouts(o.conntrackTimeouts);
    } catch (e) {
      fail((e as Error).message);
    }
    for (const [flag, v] of [
      ['--data-ifaces', o.dataIfaces],
      ['--l3-ifaces', o.l3Ifaces],
    ] as const) {
      try {
        new RegExp(v);
      } catch (e) {
        fail(`${flag}: ${(e as Error).message}`);
      }
    }
    if (o.manifests && o.kubeconfig) fail('use --manifests or --kubeconfig, not both');
    const tcAttach = o.tcAttach;
    try {
      resolveAttachMode(tcAttach);
    } catch (e) {
      fail((e as Error).message);
    }
    let healthz: BindAddress | undefined;
    let metrics: BindAddress | undefined;
    let health: BindAddress | undefined;
    try {
      healthz = resolveBindAddress(
        '--healthz-bind-address',
        o.healthzBindAddress,
        '--healthz-port',
        o.healthzPort,
        LISTEN_DEFAULTS.healthz,
      );
      metrics = resolveBindAddress(
        '--metrics-bind-address',
        o.metricsBindAddress,
        '--metrics-port',
        o.metricsPort,
        LISTEN_DEFAULTS.metrics,
      );
      health = resolveBindAddress('--health-bind-address', o.healthBindAddress, '--health-port', o.healthPort, LISTEN_DEFAULTS.health);
    } catch (e) {
      fail((e as Error).message);
    }
    let services: ServicePolicy | undefined;
    try {
      const externalIPCidrs = parseCidrList(o.externalIpCidrs);
      services = {
        nodePortRange: parsePortRange(o.serviceNodePortRange),
        ...(externalIPCidrs ? { externalIPCidrs } : {}),
        allowNodeAddressExternalIPs: !!o.allowNodeAddressExternalIps,
        maxFrontendsPerService: o.maxFrontendsPerService,
      };
    } catch (e) {
      fail(`--service-node-port-range / --external-ip-cidrs: ${(e as Error).message}`);
    }
    const base: AgentConfig = {
      ...CALICO_DEFAULTS,
      bpfEnabled: o.bpfEnabled ?? !!o.manifests,
      bpfDataIfacePattern: o.dataIfaces,
      bpfL3IfacePattern: o.l3Ifaces,
      bpfKubeProxyMinSyncPeriod: o.minSyncPeriod,
      bpfConntrackTimeouts: ctTimeouts,
      bpfMapSizeConntrack: o.mapSizeConntrack,
      bpfMapSizeNATFrontend: o.mapSizeNatFrontend,
      bpfMapSizeNATBackend: o.mapSizeNatBackend,
      bpfMapSizeNATAffinity: o.mapSizeNatAffinity,
      bpfKubeProxyHealthzPort: healthz?.port ?? CALICO_DEFAULTS.bpfKubeProxyHealthzPort,
    };
    let agent: Agent;
    try {
      agent = await Agent.start(
        {
          source: o.manifests
            ? { kind: 'manifests', dir: o.manifests, maxFileBytes: o.manifestMaxFileSize }
            : { kind: 'kubernetes', ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}) },
          nodeName: o.node,
          podIfaces: o.podIfaces,
          tcAttach,
          pinDir: o.pinDir,
          bpfDir: o.bpfDir,
          base,
          syncPeriodMs: o.syncPeriod,
          metricsPort: metrics?.port ?? 0,
          metricsHost: metrics?.host,
          healthPort: health?.port ?? 0,
          healthHost: health?.host,
          healthzHost: healthz?.host ?? null,
          stateDir: o.stateDir,
          services,
        },
        log,
      );
    } catch (e) {
      log.fatal({ err: e }, `agent could not start: ${(e as Error).message}`);
      process.exit(1);
    }
    const shutdown = (sig: string) => {
      log.info({ signal: sig }, agent.enabled ? 'stopping; the dataplane keeps serving (run "bpfproxy cleanup" to remove it)' : 'stopping');
      agent.stop();
      process.exit(0);
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });

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

program
  .command('services')
  .description('each frontend and its backends, as programmed in the maps')
  .addOption(pinDirOption())
  .addOption(outputOption())
  .action((o) =>
    withMaps(o.pinDir, (m) => {
      const v = serviceViews(m);
      if (o.output === 'json') return console.log(JSON.stringify(v, null, 2));
      console.log(
        table(
          ['SERVICE PORT', 'FRONTEND', 'KIND', 'POLICY', 'BACKENDS'],
          v.map((s) => [
            s.servicePort,
            s.frontend,
            s.kind,
            [...s.policies, ...(s.affinityTimeout ? [`affinity ${s.affinityTimeout}s`] : [])].join(' ') || '-',
            s.backends.length ? s.backends.map((b) => `${b.addr}${b.local ? ' (local)' : ''}`).join(', ') : '(none: rejects)',
          ]),
        ),
      );
    }),
  );

program
  .command('conntrack')
  .description('conntrack entries of service flows')
  .addOption(pinDirOption())
  .addOption(outputOption())
  .option('--service <name>', 'only this service (namespace/name, or namespace/name:port/PROTO)')
  .option('--ip <addr>', 'only flows with this address on either side')
  .option('--proto <proto>', 'tcp or udp')
  .action((o) =>
    withMaps(o.pinDir, (m) => {
      let v = conntrackViews(m);
      if (o.service) v = v.filter((c) => c.service === o.service || c.service.startsWith(`${o.service}:`));
      if (o.ip) v = v.filter((c) => [c.from, c.to, c.natFrom, c.natTo].some((a) => a.startsWith(`${o.ip}:`)));
      if (o.proto) v = v.filter((c) => c.proto === String(o.proto).toUpperCase());
      if (o.output === 'json') return console.log(JSON.stringify(v, null, 2));
      console.log(
        table(
          ['PROTO', 'DIR', 'FLOW', 'TRANSLATED TO', 'STATE', 'FLAGS', 'SERVICE', 'EXPIRES'],
          v.map((c) => [
            c.proto,
            c.dir,
            `${c.from} -> ${c.to}`,
            `${c.natFrom} -> ${c.natTo}`,
            c.state,
            c.flags.join(',') || '-',
            c.service || '-',
            `${c.expiresInS}s`,
          ]),
        ),
      );
      console.log(`${v.length} entries`);
    }),
  );

/** Whether any of the datapath's maps is pinned under pinDir (none: the dataplane is off). */
const anyMapPinned = (pinDir: string): boolean => Object.values(MAP_NAMES).some((n) => existsSync(join(pinDir, n)));

const hookLabel = (a: Attachment): string => `${a.hook === 'tcx' ? 'tcx' : 'tc'} ${a.direction}`;

program
  .command('status')
  .description(
    'attached interfaces (in this network namespace), map fill levels, drops by reason; with the dataplane off (no maps pinned) still what is attached',
  )
  .addOption(pinDirOption())
  .addOption(outputOption())
  .action((o) => {
    const interfaces = attachedHere(o.pinDir);
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
            { dataplane: 'off', note, ...(leftover ? { warning: leftover } : {}), interfaces, maps: null, reasons: null },
            null,
            2,
          ),
        );
        return;
      }
      printInterfaces();
      console.log(`\nMaps\n  (none: ${note})`);
      if (leftover) console.log(`\nWarning: ${leftover}`);
      return;
    }
    withMaps(o.pinDir, (m) => {
      const s = { dataplane: 'on', interfaces, maps: mapFills(m), reasons: reasonViews(m) };
      if (o.output === 'json') return console.log(JSON.stringify(s, null, 2));
      printInterfaces();
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
    });
  });

program
  .command('cleanup')
  .description(
    'detach our programs (cls_bpf filters in this network namespace, tcx links pinned under the pin dir), delete the clsact qdiscs we created, unpin the maps; refuses while an agent runs on the pin dir',
  )
  .addOption(pinDirOption())
  .addOption(stateDirOption())
  .option('--force', 'stop a running agent first (SIGTERM, then wait for it to exit)')
  .addOption(
    new Option('--force-timeout <duration>', 'with --force: how long to wait for the agent to exit')
      .argParser(duration('--force-timeout'))
      .default(15_000, '15s'),
  )
  .action(async (o) => {
    const log = makeLogger('info');
    const r = await runCleanup({ pinDir: o.pinDir, stateDir: o.stateDir, force: !!o.force, forceTimeoutMs: o.forceTimeout }, log);
    if (!r.ok) {
      process.stderr.write(`bpfproxy cleanup: ${r.message}\n`);
      process.exit(1);
    }
    console.log(r.message);
  });

const lab = program.command('lab').description('a local namespace "cluster" to try bpfproxy on');
lab
  .command('up')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .description('build the lab namespaces and start echo servers in the pods')
  .action((o) => {
    labDown(o.prefix);
    labUp(labSpec(o.prefix));
    console.log(
      `lab ${o.prefix} is up: nodes ${labSpec(o.prefix)
        .nodes.map((n) => n.ns)
        .join(', ')}, client ${labSpec(o.prefix).client.ns}`,
    );
  });
lab
  .command('down')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .description('remove the lab namespaces and pins')
  .action((o) => {
    const gone = labDown(o.prefix);
    console.log(`removed ${gone.length} namespace(s)`);
  });
lab
  .command('demo')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .option('--manifests <dir>', 'manifests to serve', join(REPO_ROOT, 'manifests', 'examples'))
  .description('lab up, agents on both nodes, traffic to each service type, lab down')
  .action(async (o) => {
    const ok = await runDemo(o.prefix, o.manifests);
    process.exit(ok ? 0 : 1);
  });

const bench = program.command('bench').description("benchmarks: side by side with kube-proxy's modes, locally and on clusters");
const list =
  (what: string) =>
  (v: string): number[] => {
    const xs = v.split(',').map((x) => Number(x.trim()));
    if (xs.some((x) => !Number.isInteger(x) || x < 1))
      throw new InvalidArgumentError(`${what} must be a comma-separated list of whole numbers`);
    return xs;
  };
bench
  .command('local')
  .description('direct vs kube-proxy iptables vs kube-proxy nftables vs bpfproxy on the namespace lab, one run')
  .option('--smoke', 'tiny N and about a second per figure (the test suite runs this)')
  .option('--services <list>', 'service counts, e.g. 1,1000,10000,30000', list('--services'))
  .option('--endpoints <n>', 'endpoints per service', positiveInt('--endpoints'))
  .option('--reps <n>', 'repetitions of each traffic figure', positiveInt('--reps'))
  .option('--seconds <n>', 'seconds per traffic figure', positiveInt('--seconds'))
  .option('--out <dir>', 'where results.json, report.md and the charts go', join(REPO_ROOT, 'bench', 'results', 'local'))
  .action(async (o) => {
    const { runLocal, writeResults, FULL, SMOKE } = await import('./bench/local.js');
    const { renderLocal, targets } = await import('./bench/report.js');
    const base = o.smoke ? SMOKE : FULL;
    const opts = {
      ...base,
      ...(o.services ? { services: o.services } : {}),
      ...(o.endpoints ? { endpoints: o.endpoints } : {}),
      ...(o.reps ? { reps: o.reps } : {}),
      ...(o.seconds ? { seconds: o.seconds } : {}),
    };
    const r = await runLocal(
      opts,
      (s) => process.stderr.write(`bench: ${s}\n`),
      (partial) => writeResults(o.out, partial, renderLocal),
    );
    const files = writeResults(o.out, r, renderLocal);
    for (const t of targets(r))
      console.log(`${t.met === null ? '?' : t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.value} (goal ${t.goal})`);
    console.log(`wrote ${files.map((f) => join(o.out, f)).join(', ')}`);
  });
bench
  .command('gc')
  .description(
    'conntrack GC, scrapes and the UDP flush on a full conntrack map, before (JavaScript) and after (native): time and event-loop delay',
  )
  .option('--smoke', 'a tiny map (the test suite runs this)')
  .option('--entries <n>', 'conntrack entries (and map size)', positiveInt('--entries'))
  .option('--out <dir>', 'where results.json and report.md go', join(REPO_ROOT, 'bench', 'results', 'gc'))
  .action(async (o) => {
    const { runGcBench, writeGcResults, gcTargets, GC_FULL, GC_SMOKE } = await import('./bench/gc.js');
    const opts = { ...(o.smoke ? GC_SMOKE : GC_FULL), ...(o.entries ? { entries: o.entries } : {}) };
    const r = await runGcBench(opts, (s) => process.stderr.write(`bench gc: ${s}\n`));
    for (const p of r.phases)
      console.log(
        `${p.work.padEnd(9)} ${p.way.padEnd(6)} ${String(p.ms).padStart(8)} ms (CPU ${p.cpuMs} ms)   loop delay p99 ${p.lag.p99Ms} ms, max ${p.lag.maxMs} ms   (${p.count})`,
      );
    for (const t of gcTargets(r))
      console.log(`${t.met === null ? '?' : t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.value} (goal ${t.goal})`);
    console.log(
      `wrote ${writeGcResults(o.out, r)
        .map((f) => join(o.out, f))
        .join(', ')}`,
    );
  });
bench
  .command('report')
  .argument('<results>', 'a results.json from bench local')
  .option('--out <dir>', 'where to write the report (default: beside the results)')
  .description('render report.md and the charts again from saved results')
  .action(async (file: string, o) => {
    const { writeResults } = await import('./bench/local.js');
    const { renderLocal } = await import('./bench/report.js');
    const r = JSON.parse(readFileSync(file, 'utf8')) as LocalResults;
    const out = o.out ?? dirname(file);
    console.log(`wrote ${writeResults(out, r, renderLocal).join(', ')} in ${out}`);
  });

bench
  .command('cluster')
  .description('knb-compatible benchmark against a real cluster: idle, pod-to-pod and pod-to-service, TCP and UDP')
  .requiredOption('--client-node <node>', 'node for the client pod (knb: -cn)')
  .requiredOption('--server-node <node>', 'node for the server pod (knb: -sn)')
  .option('-d, --duration <seconds>', 'seconds per test', positiveInt('-d'), 10)
  .option('--only-tests <list>', 'subset (knb: -ot): all, idle, tcp, udp, p2p, p2s, p2ptcp, p2pudp, p2stcp, p2sudp', 'idle,p2p,p2s')
  .option('--name <name>', 'name of this run in the results (knb: --name; default bpfproxy-<pid>)')
  .option('--socket-buffer-size <size>', 'UDP socket buffer, iperf3 -w (knb: -sbs), e.g. 256K', 'auto')
  .option('-n, --namespace <ns>', 'namespace for the benchmark pods', 'knb')
  .option('-t, --timeout <seconds>', 'seconds to wait for a pod', positiveInt('-t'), 180)
  .option('-k, --keep', 'keep the pods and namespace afterwards')
  .option('--image <image>', 'image with iperf3 and sh', 'networkstatic/iperf3')
  .option('--kubeconfig <path>', 'kubeconfig (default: the usual places)')
  .addOption(new Option('-o, --output <format>', 'text, json or yaml').choices(['text', 'json', 'yaml']).default('text'))
  .option('-f, --file <path>', 'write the output here instead of stdout')
  .action(async (o) => {
    const { ClusterBench, parseOnlyTests, renderCluster } = await import('./bench/cluster.js');
    const { loadKubeConfig } = await import('./k8s/client.js');
    let tests;
    try {
      tests = parseOnlyTests(o.onlyTests);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
    const b = new ClusterBench(
      loadKubeConfig(o.kubeconfig),
      {
        ...(o.name ? { name: o.name } : {}),
        clientNode: o.clientNode,
        serverNode: o.serverNode,
        duration: o.duration,
        tests,
        socketBufferSize: o.socketBufferSize,
        namespace: o.namespace,
        image: o.image,
        podTimeout: o.timeout,
        keep: !!o.keep,
      },
      (s) => process.stderr.write(`bench cluster: ${s}\n`),
    );
    const out = renderCluster(await b.run(), o.output);
    if (o.file) writeFileSync(o.file, out);
    else process.stdout.write(out);
  });
bench
  .command('compare')
  .argument('<a>', 'results of one run (bench cluster -o json, or knb -o json), e.g. kube-proxy')
  .argument('<b>', 'results of the other (either format), e.g. bpfproxy')
  .option('--out <dir>', 'write compare.md and the charts here')
  .description('two cluster runs side by side, with charts')
  .action(async (a: string, b: string, o) => {
    const { compareClusters, loadClusterResults, runName } = await import('./bench/compare.js');
    const files = compareClusters(loadClusterResults(a), loadClusterResults(b), [runName(a), runName(b)]);
    if (!o.out) {
      process.stdout.write(files['compare.md']!);
      return;
    }
    const out = o.out;
    mkdirSync(out, { recursive: true });
    for (const [f, body] of Object.entries(files)) writeFileSync(join(out, f), body);
    console.log(
      `wrote ${Object.keys(files)
        .map((f) => join(out, f))
        .join(', ')}`,
    );
  });

void DIST;

/** knb's multi-letter short flags, so knb command lines work unchanged. */
const KNB_FLAGS: Record<string, string> = {
  '-cn': '--client-node',
  '-sn': '--server-node',
  '-ot': '--only-tests',
  '-sbs': '--socket-buffer-size',
};
const argv = process.argv.slice();
if (argv[2] === 'bench' && argv[3] === 'cluster') for (let i = 4; i < argv.length; i++) argv[i] = KNB_FLAGS[argv[i]!] ?? argv[i]!;

program.parseAsync(argv).catch((e: Error) => {
  process.stderr.write(`bpfproxy: ${e.message}\n`);
  process.exit(1);
});
