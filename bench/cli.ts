#!/usr/bin/env node
/** bpfproxy-bench: side by side with kube-proxy's modes, locally and on clusters. */
import { Command, InvalidArgumentError, Option } from '@commander-js/extra-typings';
import { dirname, join } from 'node:path';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import type { LocalResults } from './local.js';
import { positiveInt } from '../src/cli/options.js';
import { REPO_ROOT } from '../lab/lab.js';

/** --generator of the packets/s benches (xdp, engine-e2e) */
function parseGenerator(v: string): 'livegen' | 'flood' {
  if (v === 'livegen' || v === 'flood') return v;
  throw new InvalidArgumentError(`--generator ${v}: livegen (BPF_PROG_RUN live frames) or flood (AF_PACKET)`);
}

const bench = new Command('bpfproxy-bench')
  .description("benchmarks: side by side with kube-proxy's modes, locally and on clusters")
  .showHelpAfterError();
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
  .option(
    '--iptables-timeout <seconds>',
    'kill any one iptables command of the kube-proxy iptables variant after this long and report it as not finished (default 600, smoke 60)',
    positiveInt('--iptables-timeout'),
  )
  .option('--out <dir>', 'where results.json, report.md and the charts go', join(REPO_ROOT, 'bench', 'results', 'local'))
  .action(async (o) => {
    const { runLocal, writeResults, FULL, SMOKE } = await import('./local.js');
    const { renderLocal, targets } = await import('./report.js');
    const base = o.smoke ? SMOKE : FULL;
    const opts = {
      ...base,
      ...(o.services ? { services: o.services } : {}),
      ...(o.endpoints ? { endpoints: o.endpoints } : {}),
      ...(o.reps ? { reps: o.reps } : {}),
      ...(o.seconds ? { seconds: o.seconds } : {}),
      ...(o.iptablesTimeout ? { iptablesTimeoutS: o.iptablesTimeout } : {}),
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
  .command('tunnel')
  .description(
    'cross-node NodePort per bpfExternalServiceMode (SNAT, Tunnel, DSR) on the two-node lab, one run: connection rate and TCP throughput',
  )
  .option('--rounds <n>', 'rounds (each mode once per round)', positiveInt('--rounds'), 3)
  .option('--seconds <n>', 'seconds per figure', positiveInt('--seconds'), 5)
  .option('--threads <n>', 'crr client threads', positiveInt('--threads'), 2)
  .option('--family <4|6>', "the service's family: 6 = IPv6 service carried in the IPv4 tunnel", '4')
  .option('--out <dir>', 'where results.json and report.md go (default bench/results/tunnel, tunnel6 with --family 6)')
  .action(async (o) => {
    const { runTunnelBench, writeTunnelResults, renderTunnel } = await import('./tunnel.js');
    if (o.family !== '4' && o.family !== '6') throw new Error(`--family must be 4 or 6, not ${String(o.family)}`);
    const family = o.family === '6' ? 6 : 4;
    const out: string = o.out ?? join(REPO_ROOT, 'bench', 'results', family === 6 ? 'tunnel6' : 'tunnel');
    const r = await runTunnelBench({ rounds: o.rounds, seconds: o.seconds, threads: o.threads, family }, (s) =>
      process.stderr.write(`bench: ${s}\n`),
    );
    console.log(renderTunnel(r));
    console.log(
      `wrote ${writeTunnelResults(out, r)
        .map((f) => join(out, f))
        .join(', ')}`,
    );
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
    const { runGcBench, writeGcResults, gcTargets, GC_FULL, GC_SMOKE } = await import('./gc.js');
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
  .command('monitor')
  .description(
    'the monitor: ns per packet with nobody listening, with a listener, and (--baseline-object) before it existed; events/s a listener takes without loss',
  )
  .option('--smoke', 'tiny sizes (the test suite runs this)')
  .option('--baseline-object <path>', 'bpfproxy.o built before the monitor (e.g. from the parent commit), for the "before" figures')
  .option('--seconds <n>', 'seconds per event rate', positiveInt('--seconds'))
  .option('--out <dir>', 'where results.json and report.md go', join(REPO_ROOT, 'bench', 'results', 'monitor'))
  .action(async (o) => {
    const { runMonitorBench, writeMonitorResults, monitorTargets, MONITOR_FULL, MONITOR_SMOKE } = await import('./monitor.js');
    const opts = {
      ...(o.smoke ? MONITOR_SMOKE : MONITOR_FULL),
      ...(o.seconds ? { seconds: o.seconds } : {}),
      ...(o.baselineObject ? { baselineObject: o.baselineObject } : {}),
    };
    const r = await runMonitorBench(opts, (s) => process.stderr.write(`bench monitor: ${s}\n`));
    for (const p of r.packetNs) console.log(`${p.variant.padEnd(12)} new flow ${p.newFlowNs} ns, established ${p.establishedNs} ns`);
    for (const t of monitorTargets(r))
      console.log(`${t.met === null ? '?' : t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.value} (goal ${t.goal})`);
    console.log(
      `wrote ${writeMonitorResults(o.out, r)
        .map((f) => join(o.out, f))
        .join(', ')}`,
    );
  });
bench
  .command('policy')
  .description(
    'NetworkPolicy: ns per packet with no, one and N policies (BPF_PROG_RUN); one policy change in effect; a full policy sync; RSS',
  )
  .option('--smoke', 'tiny sizes (the test suite runs this)')
  .option('--policies <n>', 'policies in the large state', positiveInt('--policies'))
  .option('--pods <n>', 'local pods', positiveInt('--pods'))
  .option('--out <dir>', 'where results.json and report.md go', join(REPO_ROOT, 'bench', 'results', 'policy'))
  .action(async (o) => {
    const { runPolicyBench, writePolicyResults, policyTargets, POLICY_FULL, POLICY_SMOKE } = await import('./policy.js');
    const opts = {
      ...(o.smoke ? POLICY_SMOKE : POLICY_FULL),
      ...(o.policies ? { policies: o.policies } : {}),
      ...(o.pods ? { pods: o.pods } : {}),
    };
    const r = await runPolicyBench(opts, (s) => process.stderr.write(`bench policy: ${s}\n`));
    for (const t of policyTargets(r)) console.log(`${t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.value} (goal ${t.goal})`);
    console.log(
      `wrote ${writePolicyResults(o.out, r)
        .map((f) => join(o.out, f))
        .join(', ')}`,
    );
  });
bench
  .command('engine')
  .description('the AF_XDP vector engine core without I/O: ns/packet at vector sizes 1, 4, 32, 256, new and established flows')
  .option('--smoke', 'few rounds (the test suite runs this)')
  .option('--out <dir>', 'where results.json and report.md go', join(REPO_ROOT, 'bench', 'results', 'engine'))
  .action(async (o) => {
    const { runEngineBench, writeEngineResults, ENGINE_FULL, ENGINE_SMOKE } = await import('./engine.js');
    const r = runEngineBench(o.smoke ? ENGINE_SMOKE : ENGINE_FULL, (s) => process.stderr.write(`bench engine: ${s}\n`));
    for (const t of r.targets)
      console.log(`${t.met === null ? '?' : t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.value} (goal ${t.goal})`);
    console.log(
      `wrote ${writeEngineResults(o.out, r)
        .map((f) => join(o.out, f))
        .join(', ')}`,
    );
  });
bench
  .command('engine-e2e')
  .description(
    'the AF_XDP engine vs the TC path end to end on veths: 64-byte UDP to a NodePort (packets/s delivered, one run, ratio), then TCP streams when the agent is killed under load (broken ones counted)',
  )
  .option('--smoke', 'short floods, two streams (the test suite runs this)')
  .option('--queues <n>', 'veth queues, engine workers and generators: 1 or 2 (2 writes results-2q.json, report-2q.md)', '1')
  .option('--seconds <s>', 'flood seconds per dataplane (default 10, smoke 2)')
  .option('--no-xdp', 'skip the TC path with --xdp-acceleration native')
  .option(
    '--generator <name>',
    'packets/s generator: livegen (BPF_PROG_RUN live frames) or flood (AF_PACKET, one syscall a frame)',
    'livegen',
  )
  .option('--out <dir>', 'where results.json and report.md go', join(REPO_ROOT, 'bench', 'results', 'engine-e2e'))
  .action(async (o) => {
    const { runEngineE2e, writeEngineE2eResults, ENGINE_E2E_FULL, ENGINE_E2E_SMOKE } = await import('./engine-e2e.js');
    const queues = Number(o.queues);
    if (queues !== 1 && queues !== 2) throw new Error(`--queues ${o.queues}: 1 or 2 (this machine's generators pin one per CPU)`);
    const seconds = o.seconds === undefined ? undefined : Number(o.seconds);
    if (seconds !== undefined && !(seconds > 0 && seconds <= 120)) throw new Error(`--seconds ${o.seconds}: a number of seconds, 0-120`);
    const base = o.smoke ? ENGINE_E2E_SMOKE : ENGINE_E2E_FULL;
    const opts = {
      ...base,
      queues,
      xdp: base.xdp && o.xdp !== false,
      generator: parseGenerator(o.generator),
      ...(seconds ? { seconds } : {}),
    };
    const r = await runEngineE2e(opts, (s) => process.stderr.write(`bench engine-e2e: ${s}\n`));
    console.log(
      `engine / TC delivered packets/s: ${r.ratio}x${r.generatorBound ? ' (generator-bound)' : ''}; fallback: ${r.fallback.broken} of ${r.fallback.streams} streams broke`,
    );
    console.log(
      `wrote ${writeEngineE2eResults(o.out, r)
        .map((f) => join(o.out, f))
        .join(', ')}`,
    );
  });
bench
  .command('xdp')
  .description(
    'XDP vs TC per packet through BPF_PROG_RUN for the same NodePort packets (local and remote backend, new and established flows)',
  )
  .option('--smoke', 'few flows and rounds (the test suite runs this)')
  .option('--no-pps', 'skip the packets/s run on veths')
  .option(
    '--generator <name>',
    'packets/s generator: livegen (BPF_PROG_RUN live frames) or flood (AF_PACKET, one syscall a frame)',
    'livegen',
  )
  .addOption(
    new Option(
      '--family <n>',
      'address family of the packets (6: XDP serves established flows; no packets/s run, the generators send IPv4)',
    )
      .choices(['4', '6'] as const)
      .default('4' as const),
  )
  .option('--out <dir>', 'where results.json and report.md go (default bench/results/xdp, with --family 6 bench/results/xdp6)')
  .action(async (o) => {
    const { runXdpBench, writeXdpResults, XDP_FULL, XDP_SMOKE } = await import('./xdp.js');
    const { runXdpPps } = await import('./xdp.js');
    const say = (s: string) => process.stderr.write(`bench xdp: ${s}\n`);
    const generator = parseGenerator(o.generator);
    const family = o.family === '6' ? 6 : 4;
    const out = o.out ?? join(REPO_ROOT, 'bench', 'results', family === 6 ? 'xdp6' : 'xdp');
    const r = await runXdpBench({ ...(o.smoke ? XDP_SMOKE : XDP_FULL), family }, say);
    if (o.pps && family === 4) {
      r.pps = await runXdpPps({ ...(o.smoke ? { seconds: 1, rounds: 2 } : { seconds: 3, rounds: 4 }), generator }, say);
      r.targets.push({
        target: 'packets/s forwarded per core, XDP vs TC (NodePort UDP to a remote backend, veth)',
        value: `${r.pps.ratio}x (${r.pps.xdp.forwardedPps} vs ${r.pps.tc.forwardedPps}/s)`,
        goal: '>= 2x',
        met: r.pps.ratio >= 2,
      });
    }
    for (const t of r.targets) console.log(`${t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.value} (goal ${t.goal})`);
    console.log(
      `wrote ${writeXdpResults(out, r)
        .map((f) => join(out, f))
        .join(', ')}`,
    );
  });
bench
  .command('ipv6')
  .description(
    'IPv6 vs IPv4 for the same service: ns per packet through BPF_PROG_RUN (established flow, new flow), then connections/s and TCP throughput in the dual-stack lab',
  )
  .option('--smoke', 'few flows and rounds')
  .option('--no-traffic', 'skip connections/s and TCP throughput in the dual-stack lab (bench/ipv6-traffic.ts)')
  .option('--out <dir>', 'where results.json and report.md go', join(REPO_ROOT, 'bench', 'results', 'ipv6'))
  .option('--baseline-object <path>', "another build's bpfproxy.o: its figures from the same rounds (before/after in one run)")
  .action(async (o) => {
    const { runIpv6Bench, writeIpv6Results, IPV6_FULL, IPV6_SMOKE } = await import('./ipv6.js');
    const r = await runIpv6Bench(
      { ...(o.smoke ? IPV6_SMOKE : IPV6_FULL), ...(o.baselineObject ? { baselineObject: o.baselineObject } : {}) },
      (s) => process.stderr.write(`bench ipv6: ${s}\n`),
    );
    if (o.traffic) {
      const t = await import('./ipv6-traffic.js');
      r.traffic = await t.runIpv6Traffic(o.smoke ? t.IPV6_TRAFFIC_SMOKE : t.IPV6_TRAFFIC_FULL, (s) =>
        process.stderr.write(`bench ipv6: ${s}\n`),
      );
      r.targets.push(...t.ipv6TrafficTargets(r.traffic));
    }
    for (const t of r.targets) console.log(`${t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.value} (goal ${t.goal})`);
    for (const f of r.baseline?.figures ?? []) console.log(`baseline ${f.flow}: ${f.ratio}x (${f.ipv6Ns} vs ${f.ipv4Ns} ns)`);
    console.log(
      `wrote ${writeIpv6Results(o.out, r)
        .map((f) => join(o.out, f))
        .join(', ')}`,
    );
  });
bench
  .command('memory')
  .description(
    "the agent's control plane alone (source, store, desired state) at N services x E endpoints, fed by manifests and by the in-process API: RSS and heap after GC",
  )
  .option('--services <n>', 'services', positiveInt('--services'), 10000)
  .option('--endpoints <n>', 'endpoints per service', positiveInt('--endpoints'), 10)
  .addOption(new Option('--source <source>', 'only this source').choices(['manifests', 'kubernetes']))
  .option('--heap-snapshot <prefix>', 'also write a heap snapshot of each, <prefix>-<source>.heapsnapshot')
  .action(async (o) => {
    const { measureMemory } = await import('./memory.js');
    for (const source of o.source ? [o.source] : (['manifests', 'kubernetes'] as const)) {
      const m = await measureMemory(source, o.services, o.endpoints, {
        ...(o.heapSnapshot ? { heapSnapshot: `${o.heapSnapshot}-${source}.heapsnapshot` } : {}),
      });
      console.log(
        `${source.padEnd(10)} ${m.services} services / ${m.endpoints} endpoints: RSS ${m.loaded.rssMiB} MiB (${m.before.rssMiB} before loading, peak ${m.peakRssMiB}), ` +
          `heap ${m.loaded.heapMiB} MiB (${m.before.heapMiB} before), external ${m.loaded.externalMiB} MiB; loaded in ${m.loadMs} ms (${m.loadCpuMs} ms CPU)`,
      );
    }
  });
bench
  .command('report')
  .argument('<results>', 'a results.json from bench local')
  .option('--out <dir>', 'where to write the report (default: beside the results)')
  .description('render report.md and the charts again from saved results')
  .action(async (file: string, o) => {
    const { writeResults } = await import('./local.js');
    const { renderLocal } = await import('./report.js');
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
    const { ClusterBench, parseOnlyTests, renderCluster } = await import('./cluster.js');
    const { loadKubeConfig } = await import('./kubeconfig.js');
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
    const { compareClusters, loadClusterResults, runName } = await import('./compare.js');
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
/** knb's multi-letter short flags, so knb command lines work unchanged. */
const KNB_FLAGS: Record<string, string> = {
  '-cn': '--client-node',
  '-sn': '--server-node',
  '-ot': '--only-tests',
  '-sbs': '--socket-buffer-size',
};
const argv = process.argv.slice();
if (argv[2] === 'cluster') for (let i = 3; i < argv.length; i++) argv[i] = KNB_FLAGS[argv[i]!] ?? argv[i]!;

bench.parseAsync(argv).catch((e: Error) => {
  process.stderr.write(`bpfproxy-bench: ${e.message}\n`);
  process.exit(1);
});
