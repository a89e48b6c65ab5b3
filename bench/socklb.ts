/**
 * Socket-level LB vs the TC path vs direct, pod -> ClusterIP, IPv4 and
 * IPv6 (native IPv6 sockets to an IPv6 ClusterIP), one run:
 *   node dist/bench/socklb.js [--millis 3000] [--threads 2]
 * A node namespace, a client pod and a server pod behind veths with the TC
 * programs attached as the agent does; the socket hooks on a cgroup made
 * here under /sys/fs/cgroup/unified (never the root cgroup). Three paths
 * from the same client pod: direct to the server pod's address, the
 * ClusterIP through the TC path (client outside the cgroup), the ClusterIP
 * through the socket hooks (client inside it). Connection rate by
 * bench/.output/crr, TCP throughput by iperf3 (one stream). The same three
 * paths again over IPv6 (the pods dual-stack). Prints one JSON object (IPv4
 * at the top, IPv6 under "ipv6"); everything it made is removed on exit.
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
const CLIENT6 = 'fd00:10:244:1::10';
const SERVER6 = 'fd00:10:244:1::20';
const VIP6 = 'fd00:10:96::10';
const GW6 = 'fe80::1';

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

function pod(ns: string, hostIf: string, addr: string, addr6: string): void {
  addNetns(ns);
  for (const n of [ns, names.node]) {
    sysctl(n, 'net.ipv6.conf.all.accept_dad', '0');
    sysctl(n, 'net.ipv6.conf.default.accept_dad', '0');
  }
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
  ip(ns, 'addr', 'add', `${addr6}/128`, 'dev', 'eth0', 'nodad');
  ip(names.node, 'addr', 'add', `${GW6}/64`, 'dev', hostIf, 'nodad');
  ip(ns, '-6', 'route', 'add', 'default', 'via', GW6, 'dev', 'eth0');
  ip(names.node, '-6', 'route', 'add', `${addr6}/128`, 'dev', hostIf);
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
  sysctl(names.node, 'net.ipv6.conf.all.forwarding', '1');
  ip(names.node, 'link', 'set', 'lo', 'up');
  ip(names.node, 'addr', 'add', `${NODE_IP}/32`, 'dev', 'lo');
  pod(names.client, 'calicl', CLIENT, CLIENT6);
  pod(names.server, 'calisv', SERVER, SERVER6);
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
    const svc = (vip: string, server: string, port: number) => ({
      kind: 'ClusterIP' as const,
      ip: vip,
      port,
      protocol: 'TCP' as const,
      servicePort: `bench/sock:${port}/TCP`,
      externalLocal: false,
      internalLocal: false,
      affinityTimeout: 0,
      clusterBackends: [{ ip: server, port, local: true }],
      localBackends: [{ ip: server, port, local: true }],
    });
    rec.syncService('bench/sock', [svc(VIP, SERVER, 9000), svc(VIP, SERVER, 5201)]);
    rec.syncService('bench/sock6', [svc(VIP6, SERVER6, 9000), svc(VIP6, SERVER6, 5201)]);
    mkdirSync(cg);
    attachSockLinks(pinDir, cg, dp.objects[0]!);

    spawn('nsenter', [`--net=${nsPath(names.server)}`, '--', CRR, 'server', '9000'], { detached: true, stdio: 'ignore' }).unref();
    spawn('nsenter', [`--net=${nsPath(names.server)}`, '--', 'iperf3', '-s', '-p', '5201'], { detached: true, stdio: 'ignore' }).unref();
    await new Promise((r) => setTimeout(r, 500));

    // socket LB before the TC path: the TC path's closed flows stay in
    // conntrack for a while (RST: 40 s) and a reply from the backend to a
    // reused client port would meet their reverse translation (IPv6 has no
    // TCP port-reuse check yet)
    const paths = (server: string, vip: string) => [
      { path: 'direct', host: server, cgroup: false },
      { path: 'socket-lb', host: vip, cgroup: true },
      { path: 'tc', host: vip, cgroup: false },
    ];
    const run = (list: ReturnType<typeof paths>) => {
      const results = [];
      for (const p of list) {
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
      return {
        results,
        ratios: Object.fromEntries(
          results.map((r) => [
            r.path,
            { connRate: +(r.connPerSec / direct.connPerSec).toFixed(2), throughput: +(r.gbit / direct.gbit).toFixed(2) },
          ]),
        ),
      };
    };
    const v4 = run(paths(SERVER, VIP));
    const v6 = run(paths(SERVER6, VIP6));
    console.log(
      JSON.stringify(
        {
          millis: MILLIS,
          threads: THREADS,
          ...v4,
          ipv6: v6,
          socketLbCounters: Object.fromEntries(Object.entries(readSockStats(dp.maps)).map(([k, v]) => [k, String(v)])),
          conntrackEntriesAfter: dp.maps.ct.count(),
          conntrack6EntriesAfter: dp.maps.ct6.count(),
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
