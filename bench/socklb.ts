/**
 * Socket-level LB vs the TC path vs direct, pod -> ClusterIP, one run:
 *   node dist/bench/socklb.js [--millis 3000] [--threads 2]
 * A node namespace, a client pod and a server pod behind veths with the TC
 * programs attached as the agent does; the socket hooks on a cgroup made
 * here under /sys/fs/cgroup/unified (never the root cgroup). Three paths
 * from the same client pod: direct to the server pod's address, the
 * ClusterIP through the TC path (client outside the cgroup), the ClusterIP
 * through the socket hooks (client inside it). Connection rate by
 * bench/.output/crr, TCP throughput by iperf3 (one stream). Prints one JSON
 * object; everything it made is removed on exit.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { loadDatapath } from '../src/dataplane/bpf/loader.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { attachSockLinks, detachSockLinks, readSockStats } from '../src/dataplane/bpf/sock.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { ensureBpffs } from '../src/dataplane/bpf/bpffs.js';
import { addNetns, delNetns, ip, nsPath, sysctl, uniqueTag } from '../testkit/netns.js';
import { CRR } from './topology.js';
import { REPO_ROOT } from '../lab/lab.js';

const arg = (k: string, d: number): number => {
  const i = process.argv.indexOf(`--${k}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const MILLIS = arg('millis', 3000);
const THREADS = arg('threads', 2);
const NODE_IP = '192.0.2.11';
const CLIENT = '10.244.1.10';
const SERVER = '10.244.1.20';
const VIP = '10.96.0.10';

const tag = uniqueTag();
const names = { node: `bpxb-${tag}-n`, client: `bpxb-${tag}-c`, server: `bpxb-${tag}-s` };
const cg = join('/sys/fs/cgroup/unified', `bpxb-sock-${tag}`);
const pinDir = `/sys/fs/bpf/bpxb-${tag}`;

function cleanup(): void {
  try {
    if (existsSync(pinDir)) detachSockLinks(pinDir);
  } catch {
    // unpinning below frees them
  }
  for (const ns of [names.client, names.server, names.node]) delNetns(ns);
  if (existsSync(cg)) {
    for (const p of readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone
      }
    }
    try {
      rmdirSync(cg);
    } catch {
      // a process still leaving: removed by the next run's operator
    }
  }
  rmSync(pinDir, { recursive: true, force: true });
}

function pod(ns: string, hostIf: string, addr: string): void {
  addNetns(ns);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', names.node);
  ip(ns, 'addr', 'add', `${addr}/32`, 'dev', 'eth0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'lo', 'up');
  ip(ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(names.node, 'link', 'set', hostIf, 'up');
  const mac = (JSON.parse(ip(names.node, '-j', 'link', 'show', hostIf)) as Array<{ address: string }>)[0]!.address;
  ip(ns, 'neigh', 'replace', '169.254.1.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  sysctl(names.node, `net.ipv4.conf.${hostIf}.rp_filter`, '0');
  ip(names.node, 'route', 'add', `${addr}/32`, 'dev', hostIf, 'scope', 'link', 'src', NODE_IP);
}

/** Run cmd in the client pod, in the socket-LB cgroup or not; its stdout. */
function inClient(inCgroup: boolean, cmd: string, args: string[], timeoutMs: number): string {
  const join_ = inCgroup ? `echo $$ > ${cg}/cgroup.procs && ` : '';
  const r = spawnSync('sh', ['-c', `${join_}exec nsenter --net=${nsPath(names.client)} "$@"`, 'sh', cmd, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}

async function main(): Promise<void> {
  process.on('exit', cleanup);
  process.on('SIGINT', () => process.exit(130));
  addNetns(names.node);
  sysctl(names.node, 'net.ipv4.ip_forward', '1');
  sysctl(names.node, 'net.ipv4.conf.all.rp_filter', '0');
  ip(names.node, 'link', 'set', 'lo', 'up');
  ip(names.node, 'addr', 'add', `${NODE_IP}/32`, 'dev', 'lo');
  pod(names.client, 'calicl', CLIENT);
  pod(names.server, 'calisv', SERVER);
  ensureBpffs('/sys/fs/bpf');
  const dp = await loadDatapath(join(REPO_ROOT, 'bpf', '.output'), pinDir, DEFAULT_DATAPATH);
  try {
    const prev = native().enterNetns(nsPath(names.node));
    try {
      for (const dev of ['calicl', 'calisv']) {
        const idx = native()
          .interfaces()
          .find((i) => i.name === dev)!.index;
        native().tcHookCreate(idx);
        native().tcAttach(idx, 'ingress', dp.programs.fromPod.fd, 1, 1);
        native().tcAttach(idx, 'egress', dp.programs.toPod.fd, 1, 1);
        dp.maps.podIfs.set({ ifindex: idx }, { v: 1 });
      }
    } finally {
      native().restoreNetns(prev);
    }
    const rec = new BpfReconciler(dp.maps);
    rec.setNodeAddresses([NODE_IP]);
    const svc = (port: number) => ({
      kind: 'ClusterIP' as const,
      ip: VIP,
      port,
      protocol: 'TCP' as const,
      servicePort: `bench/sock:${port}/TCP`,
      externalLocal: false,
      internalLocal: false,
      affinityTimeout: 0,
      clusterBackends: [{ ip: SERVER, port, local: true }],
      localBackends: [{ ip: SERVER, port, local: true }],
    });
    rec.syncService('bench/sock', [svc(9000), svc(5201)]);
    mkdirSync(cg);
    attachSockLinks(pinDir, cg, dp.objects[0]!);

    spawn('nsenter', [`--net=${nsPath(names.server)}`, '--', CRR, 'server', '9000'], { detached: true, stdio: 'ignore' }).unref();
    spawn('nsenter', [`--net=${nsPath(names.server)}`, '--', 'iperf3', '-s', '-p', '5201'], { detached: true, stdio: 'ignore' }).unref();
    await new Promise((r) => setTimeout(r, 500));

    const paths = [
      { path: 'direct', host: SERVER, cgroup: false },
      // socket LB before the TC path: the TC path's closed flows stay in
      // conntrack for a while (RST: 40 s) and a reply from the backend to a
      // reused client port would meet their reverse translation (see the
      // report: a SYN-ACK hitting a closed reply entry)
      { path: 'socket-lb', host: VIP, cgroup: true },
      { path: 'tc', host: VIP, cgroup: false },
    ];
    const results = [];
    for (const p of paths) {
      const crr = JSON.parse(inClient(p.cgroup, CRR, ['client', p.host, '9000', String(MILLIS), String(THREADS)], MILLIS + 15_000)) as {
        rate: number;
        errors: number;
        p50_us?: number;
        p99_us?: number;
      };
      const iperf = JSON.parse(
        inClient(p.cgroup, 'iperf3', ['-c', p.host, '-p', '5201', '-t', String(MILLIS / 1000), '-J'], MILLIS + 15_000),
      ) as {
        end: { sum_received: { bits_per_second: number }; cpu_utilization_percent: { host_total: number; remote_total: number } };
      };
      const gbit = iperf.end.sum_received.bits_per_second / 1e9;
      results.push({
        path: p.path,
        connPerSec: Math.round(crr.rate),
        crrErrors: crr.errors,
        p50us: crr.p50_us,
        p99us: crr.p99_us,
        gbit: +gbit.toFixed(2),
        senderCpuPctPerGbit: +(iperf.end.cpu_utilization_percent.host_total / gbit).toFixed(2),
      });
    }
    const direct = results[0]!;
    const ct = dp.maps.ct.count();
    console.log(
      JSON.stringify(
        {
          millis: MILLIS,
          threads: THREADS,
          results,
          ratios: Object.fromEntries(
            results.map((r) => [
              r.path,
              { connRate: +(r.connPerSec / direct.connPerSec).toFixed(2), throughput: +(r.gbit / direct.gbit).toFixed(2) },
            ]),
          ),
          socketLbCounters: Object.fromEntries(Object.entries(readSockStats(dp.maps)).map(([k, v]) => [k, String(v)])),
          conntrackEntriesAfter: ct,
        },
        null,
        2,
      ),
    );
  } finally {
    dp.close();
  }
}

main().catch((e: unknown) => {
  console.error(`socket LB benchmark failed: ${(e as Error).message}`);
  process.exitCode = 1;
});
