/**
 * Where healthz, metrics and the agent's probes listen: kube-proxy's flag
 * names and forms, the defaults, bad values refused naming the flag, and
 * each server reachable on its address and not on another (127.0.0.2 vs
 * 127.0.0.1, [::1]), inside a namespace of the test's own.
 */
import t from 'tap';
import { request } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LISTEN_DEFAULTS, formatBindAddress, parseBindAddress, resolveBindAddress } from '../src/health/bind-address.js';
import { HealthServers } from '../src/health/servers.js';
import { Metrics } from '../src/metrics.js';
import { native } from '../src/native/index.js';
import { ip } from '../testkit/netns.js';
import { silentLogger } from '../src/log.js';
import { tmpNetns, tmpPinDir } from './helpers/env.js';
import { cliIn, startAgentIn, tmpDir } from './helpers/agent-proc.js';
import { sleep } from './helpers/wait.js';

type Reply = { status: number; body: string } | { error: string };

function get(host: string, port: number, path: string): Promise<Reply> {
  return new Promise((resolve) => {
    const req = request({ host, port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('ETIMEDOUT')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.end();
  });
}

/** The first answer within ~2 s (servers listen asynchronously). */
async function answer(host: string, port: number, path: string): Promise<Reply> {
  let r = await get(host, port, path);
  for (let i = 0; i < 100 && 'error' in r; i++) {
    await sleep(20);
    r = await get(host, port, path);
  }
  return r;
}

t.test('bind address forms, as kube-proxy takes them', async (t) => {
  const f = '--metrics-bind-address';
  t.same(parseBindAddress(f, '127.0.0.1:10249'), { host: '127.0.0.1', port: 10249 });
  t.same(parseBindAddress(f, '0.0.0.0'), { host: '0.0.0.0' }, 'host only');
  t.same(parseBindAddress(f, '[::1]:10249'), { host: '::1', port: 10249 }, 'IPv6 with port');
  t.same(parseBindAddress(f, '[::]'), { host: '::' }, 'IPv6 in brackets, no port');
  t.same(parseBindAddress(f, '::'), { host: '::' }, 'bare IPv6');
  t.same(parseBindAddress(f, 'fd00::1'), { host: 'fd00::1' });
  t.equal(parseBindAddress(f, ''), 'off', 'empty turns it off');
  for (const bad of [
    'localhost:9091',
    'localhost',
    '1.2.3.4:99999',
    '1.2.3.4:',
    '1.2.3.4:x',
    '[::1',
    '[::1]:',
    '[1.2.3.4]:80',
    '300.1.1.1',
    '::1:80:',
  ]) {
    t.throws(
      () => parseBindAddress(f, bad),
      { message: new RegExp(`^--metrics-bind-address "${bad.replace(/[[\]]/g, '\\$&')}"`) },
      `${bad} refused, naming the flag`,
    );
  }
  const def = LISTEN_DEFAULTS.metrics;
  t.same(resolveBindAddress(f, undefined, '--metrics-port', undefined, def), { host: '127.0.0.1', port: 9091 }, 'default');
  t.same(resolveBindAddress(f, { host: '::1' }, '--metrics-port', undefined, def), { host: '::1', port: 9091 }, 'host only: default port');
  t.same(
    resolveBindAddress(f, undefined, '--metrics-port', 9100, def),
    { host: '127.0.0.1', port: 9100 },
    'the port flag sets the port part',
  );
  t.same(
    resolveBindAddress(f, { host: '0.0.0.0' }, '--metrics-port', 9100, def),
    { host: '0.0.0.0', port: 9100 },
    'and combines with a host-only address',
  );
  t.same(
    resolveBindAddress(f, { host: '0.0.0.0', port: 9100 }, '--metrics-port', 9100, def),
    { host: '0.0.0.0', port: 9100 },
    'agreeing twice is fine',
  );
  t.throws(
    () => resolveBindAddress(f, { host: '0.0.0.0', port: 9000 }, '--metrics-port', 9100, def),
    /--metrics-bind-address says port 9000 and --metrics-port says 9100/,
  );
  t.equal(resolveBindAddress(f, 'off', '--metrics-port', undefined, def), undefined, 'empty: off');
  t.equal(resolveBindAddress(f, undefined, '--metrics-port', 0, def), undefined, 'port 0: off, as before');
  t.equal(formatBindAddress({ host: '::1', port: 1 }), '[::1]:1');
  t.same(
    LISTEN_DEFAULTS,
    {
      healthz: { host: '0.0.0.0', port: 10256 },
      metrics: { host: '127.0.0.1', port: 9091 },
      health: { host: '127.0.0.1', port: 9099 },
    },
    "defaults: kube-proxy's hosts, our ports",
  );
});

t.test('bad values are refused before anything starts, naming the flag', async (t) => {
  const ns = tmpNetns(t);
  const cases: Array<[string[], RegExp]> = [
    [['--metrics-bind-address', 'localhost:9091'], /--metrics-bind-address.*"localhost" is not an IP address/],
    [['--healthz-bind-address', '1.2.3.4:70000'], /--healthz-bind-address.*port "70000"/],
    [['--health-bind-address', '[::1'], /--health-bind-address.*unbalanced/],
    [
      ['--metrics-bind-address', '127.0.0.1:9000', '--metrics-port', '9001'],
      /--metrics-bind-address says port 9000 and --metrics-port says 9001/,
    ],
    [['--healthz-port', 'ten'], /--healthz-port must be a port number/],
  ];
  for (const [args, re] of cases) {
    const r = cliIn(ns, ['agent', '--manifests', '/nonexistent-bpfproxy-test', ...args], 20_000);
    t.not(r.status, 0, `${args.join(' ')}: exits non-zero`);
    t.match(r.stderr + r.stdout, re, `${args.join(' ')}: says why`);
  }
});

t.test('servers listen on the address they are given', async (t) => {
  const ns = tmpNetns(t);
  const prev = native().enterNetns(`/run/netns/${ns}`);
  t.teardown(() => native().restoreNetns(prev));
  const metrics = new Metrics();
  const health = new HealthServers(silentLogger);
  t.teardown(() => {
    metrics.close();
    health.close();
  });

  metrics.listen({ host: '127.0.0.2', port: 19091 }, silentLogger);
  t.match(await answer('127.0.0.2', 19091, '/metrics'), { status: 200 }, 'metrics on 127.0.0.2');
  t.match(await get('127.0.0.1', 19091, '/metrics'), { error: 'ECONNREFUSED' }, 'and not on 127.0.0.1');

  health.setProbes({ host: '::1', port: 19099 }, () => true);
  t.match(await answer('::1', 19099, '/liveness'), { status: 200 }, 'probes on [::1]');
  t.match(await get('127.0.0.1', 19099, '/liveness'), { error: 'ECONNREFUSED' }, 'and not on 127.0.0.1');

  const state = () => ({ healthy: true, lastUpdated: new Date(), warnings: [] });
  health.setHealthz({ host: '127.0.0.2', port: 19256 }, state);
  t.match(await answer('127.0.0.2', 19256, '/healthz'), { status: 200 }, 'healthz on 127.0.0.2');
  t.match(await get('127.0.0.1', 19256, '/healthz'), { error: 'ECONNREFUSED' }, 'and not on 127.0.0.1');
  health.setHealthz({ host: '127.0.0.1', port: 19256 }, state);
  t.match(await answer('127.0.0.1', 19256, '/healthz'), { status: 200 }, 'a new address moves it');
  await sleep(50);
  t.match(await get('127.0.0.2', 19256, '/healthz'), { error: 'ECONNREFUSED' }, 'off the old one');
});

t.test('the agent: defaults, and flags that move each server', async (t) => {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'peer0', 'up');
  ip(ns, 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0');
  const manifests = tmpDir(t, 'bpfproxy-listen-');
  writeFileSync(join(manifests, 'empty.yaml'), '');
  const state = tmpDir(t, 'bpfproxy-state-');
  const common = [
    '--manifests',
    manifests,
    '--node',
    'n1',
    '--bpf-enabled',
    'true',
    '--data-ifaces',
    '^nothing$',
    '--pod-ifaces',
    '^nothing$',
    '--state-dir',
    state,
  ];
  const prev = native().enterNetns(`/run/netns/${ns}`);
  t.teardown(() => native().restoreNetns(prev));

  await t.test('defaults: healthz on every address, metrics and probes on 127.0.0.1 only', async (t) => {
    const a = await startAgentIn(t, ns, [...common, '--pin-dir', tmpPinDir(t)]);
    t.match(await answer('192.0.2.1', 10256, '/healthz'), { status: 200 }, 'healthz 0.0.0.0:10256');
    t.match(await answer('127.0.0.1', 9091, '/metrics'), { status: 200 }, 'metrics 127.0.0.1:9091');
    t.match(await get('192.0.2.1', 9091, '/metrics'), { error: 'ECONNREFUSED' }, 'not on the node address');
    t.match(await answer('127.0.0.1', 9099, '/liveness'), { status: 200 }, 'probes 127.0.0.1:9099');
    t.match(await get('192.0.2.1', 9099, '/liveness'), { error: 'ECONNREFUSED' }, 'not on the node address');
    a.child.kill('SIGTERM');
    t.equal(await a.exited, 0);
  });

  await t.test('given addresses, IPv6 and host-only forms, and the old port flags', async (t) => {
    const a = await startAgentIn(t, ns, [
      ...common,
      '--pin-dir',
      tmpPinDir(t),
      '--healthz-bind-address',
      '127.0.0.2:10300',
      '--metrics-bind-address',
      '192.0.2.1',
      '--metrics-port',
      '9300',
      '--health-bind-address',
      '[::1]:9400',
    ]);
    t.match(await answer('127.0.0.2', 10300, '/healthz'), { status: 200 }, 'healthz on 127.0.0.2:10300');
    t.match(await get('127.0.0.1', 10300, '/healthz'), { error: 'ECONNREFUSED' }, 'not on 127.0.0.1');
    t.match(await get('192.0.2.1', 10256, '/healthz'), { error: 'ECONNREFUSED' }, 'not on the default');
    t.match(await answer('192.0.2.1', 9300, '/metrics'), { status: 200 }, 'metrics on the node address, port from --metrics-port');
    t.match(await get('127.0.0.1', 9300, '/metrics'), { error: 'ECONNREFUSED' }, 'not on 127.0.0.1');
    t.match(await answer('::1', 9400, '/readiness'), { status: 200 }, 'probes on [::1]:9400');
    t.match(await get('127.0.0.1', 9400, '/readiness'), { error: 'ECONNREFUSED' });
    a.child.kill('SIGTERM');
    t.equal(await a.exited, 0);
  });

  await t.test('empty or port 0 turns a server off', async (t) => {
    const a = await startAgentIn(t, ns, [
      ...common,
      '--pin-dir',
      tmpPinDir(t),
      '--healthz-bind-address',
      '',
      '--metrics-port',
      '0',
      '--health-bind-address',
      '127.0.0.1:0',
    ]);
    await sleep(300);
    t.match(await get('127.0.0.1', 10256, '/healthz'), { error: 'ECONNREFUSED' }, 'no healthz');
    t.match(await get('127.0.0.1', 9091, '/metrics'), { error: 'ECONNREFUSED' }, 'no metrics');
    t.match(await get('127.0.0.1', 9099, '/liveness'), { error: 'ECONNREFUSED' }, 'no probes');
    a.child.kill('SIGTERM');
    t.equal(await a.exited, 0);
  });
});
