/**
 * Migration from kube-proxy to bpfproxy and back, in the namespace lab,
 * with traffic running through every switch: long-lived TCP connections
 * (a chunk echoed every 250 ms), long-lived UDP flows (a request answered
 * every 250 ms on one socket) and a steady rate of new short connections,
 * through a ClusterIP (from a pod) and a NodePort (from the external
 * client), TCP and UDP, four endpoints on two nodes.
 *
 *   1. kube-proxy's iptables rules serve (as kube-proxy writes them);
 *   2. takeover: FelixConfiguration bpfEnabled=true; the agents adopt the
 *      kernel's flows, attach, remove kube-proxy's rules;
 *   3. rollback: kube-proxy's rules back first, then bpfEnabled=false; the
 *      agents drain (flows they carry stay theirs, new ones go to
 *      kube-proxy);
 *   4. bpfEnabled=true during the drain resumes (flows kube-proxy opened
 *      meanwhile adopted); kube-proxy back and bpfEnabled=false again;
 *   5. the long flows end; the drain finds none open and detaches.
 *
 * Goal at each step: no long flow broken or moved to another backend (or
 * source address), no short connection failed. Everything lives in
 * namespaces with a unique prefix, removed pass or fail; traffic is bounded
 * in count and time.
 */
import t, { type Test } from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { attachedHere } from '../src/dataplane/bpf/attach.js';
import { CtDir, CtFlags, CtState } from '../src/dataplane/bpf/codecs.js';
import { native } from '../src/native/index.js';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { REASONS } from '../src/dataplane/bpf/reasons.js';
import { labWithAgents } from './helpers/lab-agents.js';
import { inNetns } from './helpers/env.js';
import {
  MIG_SERVICES,
  TrafficDriver,
  felixManifest,
  figures,
  kubeProxyChainsIn,
  kubeProxyPackets,
  migManifests,
  startKubeProxy,
  type PhaseFigures,
} from './helpers/migration.js';
import type { DriverConfig, Snapshot } from './helpers/migration-traffic.js';
import { sleep, until } from './helpers/wait.js';

const LONG_TCP = 6; // per target
const LONG_UDP = 6;
const TCP_RATE = 10; // new connections a second, per target
const UDP_RATE = 5;
const LONG_2 = 4; // per target, opened during the drain

t.test('kube-proxy -> bpfproxy -> kube-proxy under traffic: nothing breaks', async (t) => {
  const { lab, dir, agents } = await labWithAgents(t, {
    tag: 'bpxm',
    manifests: { 'mig.yaml': migManifests(), 'felix.yaml': felixManifest(false) },
    // UDP flows expire 3 s after their last packet, so the drain can end within the test
    agentArgs: ['--conntrack-timeouts', 'UDPTimeout=3s', '--rollback-drain-timeout', '60s'],
    beforeAgents: (lab) => {
      for (const n of lab.nodes) startKubeProxy(n.ns);
    },
  });
  const [n1, n2] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0]];
  const a1 = agents.get('node1')!;
  const logged = (re: RegExp, from = 0) => a1.logs.slice(from).some((l) => re.test(l));
  const [tcpSvc, udpSvc] = MIG_SERVICES as [(typeof MIG_SERVICES)[0], (typeof MIG_SERVICES)[0]];

  const cfg = (targets: DriverConfig['targets']): DriverConfig => ({
    targets,
    intervalMs: 250,
    timeoutMs: 2000,
    maxNew: 4000,
    maxMs: 150_000,
  });
  const podClient = n1.pods[2]!; // n1-c, 10.244.1.13: not an endpoint
  const drivers = [
    new TrafficDriver(
      t,
      podClient.ns,
      cfg([
        { name: 'clusterip-tcp', proto: 'tcp', host: tcpSvc.clusterIP, port: tcpSvc.port, long: LONG_TCP, rate: TCP_RATE },
        { name: 'clusterip-udp', proto: 'udp', host: udpSvc.clusterIP, port: udpSvc.port, long: LONG_UDP, rate: UDP_RATE },
      ]),
    ),
    new TrafficDriver(
      t,
      lab.client.ns,
      cfg([
        { name: 'nodeport-tcp', proto: 'tcp', host: n1.ip, port: tcpSvc.nodePort, long: LONG_TCP, rate: TCP_RATE },
        { name: 'nodeport-udp', proto: 'udp', host: n1.ip, port: udpSvc.nodePort, long: LONG_UDP, rate: UDP_RATE },
      ]),
    ),
  ];
  const snapAll = (): Promise<Snapshot[]> => Promise.all(drivers.map((d) => d.snap()));
  const report: Record<string, PhaseFigures> = {};
  const top = t; // drivers started in a subtest live as long as the whole test
  const check = (t: Test, phase: string, f: PhaseFigures) => {
    report[phase] = f;
    t.same(f.longFailed, [], `${phase}: no long-lived flow broke (${f.longTcp} TCP, ${f.longUdp} UDP)`);
    t.same(f.moved, [], `${phase}: every long-lived flow kept its backend and source address`);
    t.equal(f.udpLost, 0, `${phase}: every UDP request answered`);
    t.equal(f.shortFailed, 0, `${phase}: every new connection answered (${f.shortOk} ok; failures: ${JSON.stringify(f.shortErrors)})`);
  };
  const setBpf = (on: boolean) => writeFileSync(join(dir, 'felix.yaml'), felixManifest(on));
  const reasons = (): Record<string, number> => {
    if (!existsSync(n1.pinDir)) return {};
    const m = openPinnedMaps(n1.pinDir);
    try {
      return Object.fromEntries(
        m.maps.reasons
          .entriesPerCpu()
          .map(([k, v]) => [REASONS[k.v]!.name, v.reduce((a, c) => a + Number(c.packets), 0)] as const)
          .filter(([, n]) => n > 0),
      );
    } finally {
      m.close();
    }
  };
  t.teardown(() => {
    if (t.passing()) return;
    for (const l of a1.logs) if (/"level":"(warn|error)"|adopted|drain/.test(l)) t.comment(`node1: ${l}`);
  });

  await t.test('kube-proxy serves', async (t) => {
    t.ok(kubeProxyChainsIn(n1.ns), "kube-proxy's chains on node1");
    t.same(
      inNetns(n1.ns, () => attachedHere(n1.pinDir)),
      [],
      'bpfproxy not attached (bpfEnabled: false)',
    );
    await sleep(3000);
    const f = figures(await snapAll());
    check(t, 'kube-proxy', f);
    t.ok(f.shortOk >= 10, `short connections went through (${f.shortOk})`);
    t.ok(kubeProxyPackets(n1.ns, tcpSvc.clusterIP) > 0, "through kube-proxy's rules");
  });

  await t.test('takeover: bpfEnabled=true', async (t) => {
    const from = a1.logs.length;
    setBpf(true);
    await until('node1 takes over', () => logged(/adopted \d+ flow/, from), 60_000); // a load: seconds, more when busy
    await until("kube-proxy's rules removed on both nodes", () => !kubeProxyChainsIn(n1.ns) && !kubeProxyChainsIn(n2.ns), 15_000);
    const adoptedLog = a1.logs.slice(from).find((l) => /adopted \d+ flow/.test(l))!;
    t.comment(adoptedLog);
    t.ok(inNetns(n1.ns, () => attachedHere(n1.pinDir)).length > 0, 'bpfproxy attached on node1');
    await sleep(4000);
    const m = openPinnedMaps(n1.pinDir);
    try {
      const adopted = m.maps.ct.entries().filter(([, v]) => v.dir === CtDir.FWD && v.flags & CtFlags.ADOPTED);
      t.ok(
        adopted.length >= 2 * (LONG_TCP + LONG_UDP),
        `node1 adopted the long-lived flows kube-proxy carried (${adopted.length} adopted connections in its conntrack)`,
      );
    } finally {
      m.close();
    }
    const tf = figures(await snapAll());
    check(t, 'takeover', tf);
    if (tf.longFailed.length) {
      const m2 = openPinnedMaps(n1.pinDir);
      try {
        for (const [k, v] of m2.maps.ct.entries())
          if (k.saddr === lab.client.ip || k.daddr === lab.client.ip || v.natDaddr === lab.client.ip)
            if (k.proto === 6)
              t.comment(`ours: ${JSON.stringify({ ...k, ...v, expiresNs: String(v.expiresNs), createdNs: String(v.createdNs) })}`);
      } finally {
        m2.close();
      }
      t.comment(spawnSync('nsenter', [`--net=/run/netns/${n1.ns}`, '--', 'conntrack', '-L', '-p', 'tcp'], { encoding: 'utf8' }).stdout);
    }
    t.comment(`node1 datapath counters: ${JSON.stringify(reasons())}`);
  });

  await t.test('rollback: kube-proxy back, then bpfEnabled=false; flows drain', async (t) => {
    for (const n of lab.nodes) startKubeProxy(n.ns);
    await sleep(1500);
    const before = kubeProxyPackets(n1.ns, tcpSvc.clusterIP);
    const from = a1.logs.length;
    setBpf(false);
    await until('node1 drains', () => logged(/bpfEnabled is false: draining/, from), 15_000);
    t.notOk(logged(/kube-proxy's rules are not on this node/, from), "no warning: kube-proxy's rules were back");
    await sleep(4000);
    check(t, 'rollback', figures(await snapAll()));
    t.comment(`node1 datapath counters: ${JSON.stringify(reasons())}`);
    t.ok(inNetns(n1.ns, () => attachedHere(n1.pinDir)).length > 0, 'still attached while flows drain');
    t.ok(kubeProxyPackets(n1.ns, tcpSvc.clusterIP) > before, "new ClusterIP connections go through kube-proxy's rules");
    const m = openPinnedMaps(n1.pinDir);
    try {
      const drainNew = m.maps.reasons
        .getPerCpu({ v: REASONS.findIndex((r) => r.name === 'drain-new') })
        .reduce((a, c) => a + Number(c.packets), 0);
      t.ok(drainNew > 0, `new flows left to the kernel by the draining programs (${drainNew} packets)`);
    } finally {
      m.close();
    }
  });

  await t.test('bpfEnabled=true during the drain resumes; flows kube-proxy opened meanwhile are adopted', async (t) => {
    // long flows opened while kube-proxy serves new connections (the drain)
    drivers.push(
      new TrafficDriver(
        top,
        podClient.ns,
        cfg([
          { name: 'clusterip-tcp-2', proto: 'tcp', host: tcpSvc.clusterIP, port: tcpSvc.port, long: LONG_2, rate: 0 },
          { name: 'clusterip-udp-2', proto: 'udp', host: udpSvc.clusterIP, port: udpSvc.port, long: LONG_2, rate: 0 },
        ]),
      ),
      new TrafficDriver(
        top,
        lab.client.ns,
        cfg([
          { name: 'nodeport-tcp-2', proto: 'tcp', host: n1.ip, port: tcpSvc.nodePort, long: LONG_2, rate: 0 },
          { name: 'nodeport-udp-2', proto: 'udp', host: n1.ip, port: udpSvc.nodePort, long: LONG_2, rate: 0 },
        ]),
      ),
    );
    await sleep(2000);
    const from = a1.logs.length;
    setBpf(true);
    await until('node1 resumes', () => logged(/drain cancelled/, from), 15_000);
    await until("kube-proxy's rules removed again", () => !kubeProxyChainsIn(n1.ns) && !kubeProxyChainsIn(n2.ns), 15_000);
    t.comment(a1.logs.slice(from).find((l) => /adopted \d+ flow/.test(l)) ?? 'no adoption logged');
    t.ok(logged(/adopted \d+ flow/, from), 'the flows kube-proxy carried during the drain are adopted');
    await sleep(4000);
    const rf = figures(await snapAll());
    check(t, 'resume', rf);
    for (const mv of rf.moved) {
      const port = /:(\d+)$/.exec(mv)?.[1];
      const m = openPinnedMaps(n1.pinDir);
      try {
        const now = native().monotonicNs();
        for (const [k, v] of m.maps.ct.entries())
          if (String(k.sport) === port || String(k.dport) === port)
            t.comment(
              `${mv}: ours ${k.saddr}:${k.sport} > ${k.daddr}:${k.dport} -> ${v.natSaddr}:${v.natSport} > ${v.natDaddr}:${v.natDport} dir ${v.dir} state ${v.state} flags ${v.flags} expires in ${(v.expiresNs - now) / 1_000_000n} ms, age ${(now - v.createdNs) / 1_000_000n} ms`,
            );
      } finally {
        m.close();
      }
      t.comment(
        spawnSync('nsenter', [`--net=/run/netns/${n1.ns}`, '--', 'conntrack', '-L', '-p', 'udp', '--sport', port ?? '0'], {
          encoding: 'utf8',
        }).stdout,
      );
    }
  });

  await t.test('rollback again: kube-proxy back, then bpfEnabled=false', async (t) => {
    for (const n of lab.nodes) startKubeProxy(n.ns);
    await sleep(1500);
    const from = a1.logs.length;
    setBpf(false);
    await until('node1 drains', () => logged(/bpfEnabled is false: draining/, from), 15_000);
    await sleep(3000);
    check(t, 'rollback again', figures(await snapAll()));
  });

  await t.test('the long flows end; the drain finds none open and detaches', async (t) => {
    const from = a1.logs.length;
    await Promise.all(drivers.map((d) => d.closeLong()));
    try {
      await until('node1 ends its drain', () => logged(/drain finished after \d+s/, from), 20_000);
    } catch (e) {
      // what keeps it open
      const m = openPinnedMaps(n1.pinDir);
      try {
        const now = native().monotonicNs();
        for (const [k, v] of m.maps.ct.entries())
          if (v.dir === CtDir.FWD && v.expiresNs >= now && !(v.state & CtState.RST))
            t.comment(
              `open: ${k.saddr}:${k.sport} > ${k.daddr}:${k.dport}/${k.proto} -> ${v.natDaddr}:${v.natDport} state ${v.state} flags ${v.flags} expires in ${(v.expiresNs - now) / 1_000_000_000n}s`,
            );
      } finally {
        m.close();
      }
      throw e;
    }
    await until('node1 detached and unpinned', () => !existsSync(n1.pinDir), 5000);
    t.same(
      inNetns(n1.ns, () => attachedHere(n1.pinDir)),
      [],
      'nothing of ours attached on node1',
    );
    t.notOk(existsSync(n2.pinDir), 'node2 (nothing to drain) detached too');
    await sleep(2000);
    const last = await Promise.all(drivers.map((d) => d.stop()));
    const f = figures(last);
    report['drain end'] = f;
    t.same(f.longFailed, [], 'the long flows closed cleanly');
    t.equal(f.shortFailed, 0, `new connections through the detach (${f.shortOk} ok; failures: ${JSON.stringify(f.shortErrors)})`);
  });

  t.comment(`figures: ${JSON.stringify(report)}`);
});
