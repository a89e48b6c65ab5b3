#!/usr/bin/env node
/** bpfproxy: the agent and the operator commands. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { rmSync, readdirSync, existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { Agent } from './agent/agent.js';
import { DEFAULT_DATA_IFACES, DEFAULT_POD_IFACES, attachedHere, detachAll } from './dataplane/bpf/attach.js';
import { DEFAULT_MAP_SIZES, parseCtTimeouts, parseDuration } from './dataplane/bpf/config.js';
import { CALICO_DEFAULTS, type AgentConfig } from './config/felix.js';
import { conntrackViews, mapFills, reasonViews, serviceViews } from './dataplane/bpf/inspect.js';
import { openPinnedMaps, type DatapathMaps } from './dataplane/bpf/loader.js';
import { makeLogger } from './log.js';
import { DEFAULT_MAX_FILE_BYTES } from './sources/manifests.js';
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

const bool = (what: string) => (v: string): boolean => {
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new InvalidArgumentError(`${what} must be true or false`);
};
const port = (what: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`${what} must be a port number (0 turns it off)`);
  return n;
};

program
  .command('agent')
  .description('serve Services on this node and keep serving them as they change')
  .option('--manifests <dir>', 'serve the Service/EndpointSlice/FelixConfiguration YAML in this directory')
  .option('--manifest-max-file-size <bytes>', 'larger manifest files are not read (reported; their last good objects kept)', positiveInt('--manifest-max-file-size'), DEFAULT_MAX_FILE_BYTES)
  .option('--kubeconfig <path>', 'watch the Kubernetes API with this kubeconfig (default without --manifests: in-cluster config)')
  .option('--node <name>', 'this node\'s name (decides which endpoints are local)', process.env.NODENAME ?? hostname())
  .option('--bpf-enabled <bool>', 'own the dataplane before any FelixConfiguration says so (default: true with --manifests, false with the API, as Calico)', bool('--bpf-enabled'))
  .option('--data-ifaces <regex>', 'bpfDataIfacePattern: uplinks where NodePort, LoadBalancer and external IPs arrive', DEFAULT_DATA_IFACES)
  .option('--l3-ifaces <regex>', 'bpfL3IfacePattern: extra L3/tunnel devices treated as uplinks', '')
  .option('--pod-ifaces <regex>', 'pod-facing host interfaces', regex('--pod-ifaces'), new RegExp(DEFAULT_POD_IFACES))
  .addOption(pinDirOption())
  .option('--bpf-dir <dir>', 'where the compiled BPF objects are', join(REPO_ROOT, 'bpf', '.output'))
  .option('--min-sync-period <duration>', 'bpfKubeProxyMinSyncPeriod: minimum time between syncs', duration('--min-sync-period'), CALICO_DEFAULTS.bpfKubeProxyMinSyncPeriod)
  .option('--sync-period <duration>', 'full resync interval', duration('--sync-period'), 30_000)
  .option('--conntrack-timeouts <list>', 'bpfConntrackTimeouts, e.g. "TCPEstablished=1h,UDPTimeout=60s"', '')
  .option('--map-size-conntrack <n>', 'bpfMapSizeConntrack', positiveInt('--map-size-conntrack'), DEFAULT_MAP_SIZES.conntrack)
  .option('--map-size-nat-frontend <n>', 'bpfMapSizeNATFrontend', positiveInt('--map-size-nat-frontend'), DEFAULT_MAP_SIZES.natFrontend)
  .option('--map-size-nat-backend <n>', 'bpfMapSizeNATBackend', positiveInt('--map-size-nat-backend'), DEFAULT_MAP_SIZES.natBackend)
  .option('--map-size-nat-affinity <n>', 'bpfMapSizeNATAffinity', positiveInt('--map-size-nat-affinity'), DEFAULT_MAP_SIZES.natAffinity)
  .option('--healthz-port <port>', 'bpfKubeProxyHealthzPort (kube-proxy\'s healthz, served while bpfEnabled)', port('--healthz-port'), CALICO_DEFAULTS.bpfKubeProxyHealthzPort)
  .option('--metrics-port <port>', 'Prometheus metrics (0: off)', port('--metrics-port'), 9091)
  .option('--health-port <port>', 'agent /liveness and /readiness (0: off)', port('--health-port'), 9099)
  .option('--log-level <level>', 'trace, debug, info, warn, error', 'info')
  .action(async (o) => {
    const log = makeLogger(o.logLevel);
    const fail = (msg: string): never => {
      log.fatal(msg);
      process.exit(2);
    };
    let ctTimeouts;
    try {
      ctTimeouts = parseCtTimeouts(o.conntrackTimeouts);
    } catch (e) {
      fail((e as Error).message);
    }
    for (const [flag, v] of [['--data-ifaces', o.dataIfaces], ['--l3-ifaces', o.l3Ifaces]] as const) {
      try { new RegExp(v); } catch (e) { fail(`${flag}: ${(e as Error).message}`); }
    }
    if (o.manifests && o.kubeconfig) fail('use --manifests or --kubeconfig, not both');
    const base: AgentConfig = {
      ...CALICO_DEFAULTS,
      bpfEnabled: o.bpfEnabled ?? !!o.manifests,
      bpfDataIfacePattern: o.dataIfaces,
      bpfL3IfacePattern: o.l3Ifaces,
      bpfKubeProxyMinSyncPeriod: o.minSyncPeriod,
      bpfConntrackTimeouts: ctTimeouts!,
      bpfMapSizeConntrack: o.mapSizeConntrack,
      bpfMapSizeNATFrontend: o.mapSizeNatFrontend,
      bpfMapSizeNATBackend: o.mapSizeNatBackend,
      bpfMapSizeNATAffinity: o.mapSizeNatAffinity,
      bpfKubeProxyHealthzPort: o.healthzPort,
    };
    let agent: Agent;
    try {
      agent = await Agent.start({
        source: o.manifests ? { kind: 'manifests', dir: o.manifests, maxFileBytes: o.manifestMaxFileSize } : { kind: 'kubernetes', ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}) },
        nodeName: o.node,
        podIfaces: o.podIfaces,
        pinDir: o.pinDir,
        bpfDir: o.bpfDir,
        base,
        syncPeriodMs: o.syncPeriod,
        metricsPort: o.metricsPort,
        healthPort: o.healthPort,
      }, log);
    } catch (e) {
      log.fatal({ err: e }, `agent could not start: ${(e as Error).message}`);
      process.exit(1);
    }
    const shutdown = (sig: string) => {
      log.info({ signal: sig }, agent.enabled
        ? 'stopping; the dataplane keeps serving (run "bpfproxy cleanup" to remove it)'
        : 'stopping');
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

const bench = program.command('bench').description('benchmarks: side by side with kube-proxy\'s modes, locally and on clusters');
const list = (what: string) => (v: string): number[] => {
  const xs = v.split(',').map((x) => Number(x.trim()));
  if (xs.some((x) => !Number.isInteger(x) || x < 1)) throw new InvalidArgumentError(`${what} must be a comma-separated list of whole numbers`);
  return xs;
};
bench.command('local')
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
    const opts = { ...base, ...(o.services ? { services: o.services } : {}), ...(o.endpoints ? { endpoints: o.endpoints } : {}),
      ...(o.reps ? { reps: o.reps } : {}), ...(o.seconds ? { seconds: o.seconds } : {}) };
    const r = await runLocal(opts, (s) => process.stderr.write(`bench: ${s}\n`), (partial) => writeResults(o.out, partial, renderLocal));
    const files = writeResults(o.out, r, renderLocal);
    for (const t of targets(r)) console.log(`${t.met === null ? '?' : t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.value} (goal ${t.goal})`);
    console.log(`wrote ${files.map((f) => join(o.out, f)).join(', ')}`);
  });
bench.command('report')
  .argument('<results>', 'a results.json from bench local')
  .option('--out <dir>', 'where to write the report (default: beside the results)')
  .description('render report.md and the charts again from saved results')
  .action(async (file: string, o) => {
    const { writeResults } = await import('./bench/local.js');
    const { renderLocal } = await import('./bench/report.js');
    const r = JSON.parse(readFileSync(file, 'utf8'));
    const out = o.out ?? dirname(file);
    console.log(`wrote ${writeResults(out, r, renderLocal).join(', ')} in ${out}`);
  });

bench.command('cluster')
  .description('knb-compatible benchmark against a real cluster: idle, pod-to-pod and pod-to-service, TCP and UDP')
  .requiredOption('--client-node <node>', 'node for the client pod (knb: -cn)')
  .requiredOption('--server-node <node>', 'node for the server pod (knb: -sn)')
  .option('-d, --duration <seconds>', 'seconds per test', positiveInt('-d'), 10)
  .option('--only-tests <list>', 'subset (knb: -ot): idle, tcp, udp, p2p, p2s, p2p_tcp, p2p_udp, p2s_tcp, p2s_udp', 'idle,p2p,p2s')
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
    const b = new ClusterBench(loadKubeConfig(o.kubeconfig), {
      clientNode: o.clientNode, serverNode: o.serverNode, duration: o.duration, tests, socketBufferSize: o.socketBufferSize,
      namespace: o.namespace, image: o.image, podTimeout: o.timeout, keep: !!o.keep,
    }, (s) => process.stderr.write(`bench cluster: ${s}\n`));
    const out = renderCluster(await b.run(), o.output);
    if (o.file) writeFileSync(o.file, out);
    else process.stdout.write(out);
  });
bench.command('compare')
  .argument('<a>', 'results of one run (bench cluster -o json), e.g. kube-proxy')
  .argument('<b>', 'results of the other, e.g. bpfproxy')
  .option('--out <dir>', 'write compare.md and the charts here')
  .description('two cluster runs side by side, with charts')
  .action(async (a: string, b: string, o) => {
    const { compareClusters, runName } = await import('./bench/compare.js');
    const files = compareClusters(JSON.parse(readFileSync(a, 'utf8')), JSON.parse(readFileSync(b, 'utf8')), [runName(a), runName(b)]);
    if (!o.out) {
      process.stdout.write(files['compare.md']!);
      return;
    }
    mkdirSync(o.out, { recursive: true });
    for (const [f, body] of Object.entries(files)) writeFileSync(join(o.out, f), body);
    console.log(`wrote ${Object.keys(files).map((f) => join(o.out, f)).join(', ')}`);
  });

void DIST;

/** knb's multi-letter short flags, so knb command lines work unchanged. */
const KNB_FLAGS: Record<string, string> = { '-cn': '--client-node', '-sn': '--server-node', '-ot': '--only-tests', '-sbs': '--socket-buffer-size' };
const argv = process.argv.slice();
if (argv[2] === 'bench' && argv[3] === 'cluster') for (let i = 4; i < argv.length; i++) argv[i] = KNB_FLAGS[argv[i]!] ?? argv[i]!;

program.parseAsync(argv).catch((e: Error) => {
  process.stderr.write(`bpfproxy: ${e.message}\n`);
  process.exit(1);
});
