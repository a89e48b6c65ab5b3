/**
 * The agent on the Kubernetes API (the in-process server), run inside a
 * namespace of the test's own: FelixConfiguration drives it, health and
 * metrics answer, a relist does not touch the maps. Once with tcx links,
 * once with cls_bpf filters.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../src/agent/agent.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { attachedHere } from '../src/dataplane/bpf/attach.js';
import { native } from '../src/native/index.js';
import { ip, sysctl } from '../testkit/netns.js';
import { silentLogger } from '../src/log.js';
import { DECAP_ANNOTATION } from '../src/model/tunnel.js';
import { decapValue } from '../src/agent/decap-announce.js';
import { FakeApiServer, writeKubeconfig } from './helpers/fake-apiserver.js';
import { felix, service, slice } from './helpers/k8s-objects.js';
import { BPF_DIR, tmpNetns, tmpPinDir } from './helpers/env.js';
import { sleep, until } from './helpers/wait.js';
import { cliInAsync } from './helpers/agent-proc.js';

/** How long a (re)load of the datapath may take: the verifier's work, longer on a loaded machine. */
const LOAD_MS = 45_000;

function get(port: number, path: string): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.end();
  });
}

for (const mode of ['tcx', 'cls'] as const)
  t.test(
    `agent on the Kubernetes API (--tc-attach ${mode})`,
    { skip: mode === 'tcx' && !native().tcxSupported() ? 'kernel without tcx' : false },
    async (t) => {
      const ns = tmpNetns(t);
      ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
      ip(ns, 'link', 'add', 'calitest', 'type', 'veth', 'peer', 'name', 'podside');
      for (const l of ['eth0', 'eth1', 'calitest', 'podside']) ip(ns, 'link', 'set', l, 'up');
      ip(ns, 'addr', 'add', '192.0.2.11/24', 'dev', 'eth0');
      sysctl(ns, 'net.ipv4.ip_forward', '1');
      // Everything below (API server, agent, probes) lives in the test namespace.
      const prev = native().enterNetns(`/run/netns/${ns}`);
      t.teardown(() => native().restoreNetns(prev));

      const api = new FakeApiServer();
      const url = await api.listen('127.0.0.1');
      const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-agent-'));
      writeKubeconfig(join(dir, 'kubeconfig'), url);
      const pinDir = tmpPinDir(t);
      api.upsert(
        'services',
        service('shop', 'web', '10.96.0.10', {
          type: 'LoadBalancer',
          externalTrafficPolicy: 'Local',
          healthCheckNodePort: 32000,
          ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30080 }],
        }),
      );
      api.upsert(
        'endpointslices',
        slice('shop', 'web', 'web-1', [
          { ip: '10.244.1.11', node: 'n1' },
          { ip: '10.244.2.11', node: 'n2' },
        ]),
      );

      // the agent's own Node: it says there that it decapsulates (src/agent/decap-announce.ts)
      api.upsert('nodes', {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: 'n1' },
        status: { addresses: [{ type: 'InternalIP', address: '192.0.2.11' }] },
      });
      const decap = () =>
        (api.get('nodes', 'n1') as { metadata: { annotations?: Record<string, string> } }).metadata.annotations?.[DECAP_ANNOTATION];
      const agent = await Agent.start(
        {
          source: { kind: 'kubernetes', kubeconfig: join(dir, 'kubeconfig') },
          nodeName: 'n1',
          pinDir,
          bpfDir: BPF_DIR,
          podIfaces: /^cali/,
          tcAttach: mode,
          base: { ...DEFAULT_CONFIG, dataIfaces: /^eth0$/ },
          syncPeriodMs: 30_000,
          metricsPort: 19091,
          healthPort: 19099,
        },
        silentLogger,
      );
      t.teardown(async () => {
        agent.stop();
        await api.close();
        rmSync(dir, { recursive: true, force: true });
      });
      const hook = mode === 'tcx' ? 'tcx' : 'cls';
      const ifaces = () =>
        attachedHere()
          .filter((a) => a.direction === 'ingress' && a.hook === hook)
          .map((a) => a.iface)
          .sort();
      const egress = () =>
        attachedHere()
          .filter((a) => a.direction === 'egress' && a.hook === hook)
          .map((a) => a.iface)
          .sort();

      await t.test("no FelixConfiguration: Calico's default bpfEnabled=false, nothing touched", async (t) => {
        t.equal(agent.enabled, false);
        t.same(ifaces(), []);
        t.match(await get(10256, '/healthz'), { error: 'ECONNREFUSED' }, 'no healthz to clash with kube-proxy');
        t.match(await get(19099, '/liveness'), { status: 200 }, 'the agent itself is alive');
      });

      await t.test('bpfEnabled=true takes over', async (t) => {
        api.upsert('felixconfigurations', felix('default', { bpfEnabled: true, bpfKubeProxyHealthzPort: 10256, someFelixField: 3 }));
        // loading verifies every program (seconds; tens on a loaded 2-core machine)
        await until('enabled', () => agent.enabled, LOAD_MS);
        await agent.settled();
        t.same(ifaces(), ['calitest', 'eth0'], 'data and pod interfaces attached');
        t.same(egress(), ['calitest', 'eth0'], 'with the host-reply program on their egress');
        t.ok(agent.runtime!.dp.maps.fe.get({ addr: '10.96.0.10', port: 80, proto: 6 }), 'ClusterIP programmed');
        t.ok(agent.runtime!.dp.maps.fe.get({ addr: '0.0.0.0', port: 30080, proto: 6 }), 'NodePort programmed');
        const hz = await get(10256, '/healthz');
        t.match(hz, { status: 200 }, 'kube-proxy healthz');
        const body = JSON.parse((hz as { body: string }).body) as { nodeEligible: boolean; warnings: string[] };
        t.equal(body.nodeEligible, true);
        t.same(body.warnings, [], 'no warning: bpfExternalServiceMode Tunnel is served');
        await until('annotated', () => decap() === decapValue());
        t.equal(decap(), decapValue(), `its Node annotated ${DECAP_ANNOTATION} (a merge patch)`);
      });

      await t.test('healthCheckNodePort answers with the local endpoint count', async (t) => {
        await until('health port', () => agent.health.healthCheckPorts.includes(32000));
        const ok = await get(32000, '/');
        t.match(ok, { status: 200 });
        t.match(JSON.parse((ok as { body: string }).body), {
          service: { namespace: 'shop', name: 'web' },
          localEndpoints: 1,
          serviceProxyHealthy: true,
        });
        api.upsert('endpointslices', slice('shop', 'web', 'web-1', [{ ip: '10.244.2.11', node: 'n2' }]));
        let r = await get(32000, '/');
        for (let i = 0; i < 100 && 'status' in r && r.status !== 503; i++) {
          await sleep(30);
          r = await get(32000, '/');
        }
        t.match(r, { status: 503 }, 'no local endpoint: 503, the load balancer steers away');
        t.match(JSON.parse((r as { body: string }).body), { localEndpoints: 0 });
      });

      await t.test('an invalid value is refused with an Event naming the field; the last good config stays', async (t) => {
        api.upsert('felixconfigurations', felix('default', { bpfEnabled: true, bpfKubeProxyHealthzPort: 10256, bpfLogLevel: 'Loud' }));
        await until('event', () => api.events.some((e) => (e as { reason?: string }).reason === 'InvalidConfiguration'));
        const ev = api.events.find((e) => (e as { reason?: string }).reason === 'InvalidConfiguration') as unknown as {
          message: string;
          involvedObject: { kind: string; name: string };
        };
        t.match(ev.involvedObject, { kind: 'FelixConfiguration', name: 'default' });
        t.match(ev.message, /spec\.bpfLogLevel: must be Off, Info or Debug/);
        t.equal(agent.enabled, true, 'still serving');
        t.equal(agent.config.config.logLevel, 'Off');
      });

      await t.test('node.<name> overrides default: interface pattern moves the attachment', async (t) => {
        api.upsert('felixconfigurations', felix('default', { bpfEnabled: true, bpfKubeProxyHealthzPort: 10256 }));
        api.upsert('felixconfigurations', felix('node.n1', { bpfDataIfacePattern: '^nothing$' }));
        await until('eth0 detached', () => !ifaces().includes('eth0'));
        t.same(ifaces(), ['calitest']);
        api.upsert('felixconfigurations', felix('node.n2', { bpfEnabled: false }));
        await sleep(200);
        t.equal(agent.enabled, true, "another node's override does not apply here");
        api.remove('felixconfigurations', 'node.n1');
        await until('eth0 back', () => ifaces().includes('eth0'));
        t.pass('override removed: default pattern again');
      });

      await t.test('new conntrack timeouts reload the programs under the same maps', async (t) => {
        const before = attachedHere().find((a) => a.iface === 'eth0')!.progId;
        const fe = agent.runtime!.dp.maps.fe.entries().length;
        api.upsert(
          'felixconfigurations',
          felix('default', {
            bpfEnabled: true,
            bpfKubeProxyHealthzPort: 10256,
            bpfConntrackTimeouts: { tcpEstablished: '2h', udpTimeout: '30s' },
          }),
        );
        await until('reloaded', () => attachedHere().find((a) => a.iface === 'eth0')?.progId !== before, LOAD_MS);
        t.equal(agent.config.config.conntrack.tcpEstablished, 7_200_000);
        t.equal(agent.runtime!.dp.maps.fe.entries().length, fe, 'maps untouched');
      });

      await t.test('watch loss and 410 relist: not one map write', async (t) => {
        const maps = agent.runtime!.dp.maps;
        let writes = 0;
        for (const m of [maps.fe, maps.slots, maps.svcNames] as unknown as Array<Record<string, (...a: unknown[]) => unknown>>) {
          for (const op of ['set', 'setMany', 'delete', 'deleteMany']) {
            const orig = m[op]!.bind(m);
            m[op] = (...a: unknown[]) => {
              writes++;
              return orig(...a);
            };
          }
        }
        const relists = agent.proxier.stats.syncs;
        api.dropWatches();
        api.compact();
        api.upsert('nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: 'n9' } });
        api.compact();
        await until('relisted', () => api.requests.filter((r) => r.path === '/api/v1/services' && !r.query.watch).length >= 2);
        await sleep(300);
        await agent.proxier.runner.idle();
        t.equal(writes, 0, `no map write after the relist (${agent.proxier.stats.syncs - relists} syncs ran)`);
      });

      await t.test('metrics', async (t) => {
        const r = await get(19091, '/metrics');
        t.match(r, { status: 200 });
        const body = (r as { body: string }).body;
        for (const m of [
          'kubeproxy_sync_proxy_rules_duration_seconds_bucket',
          'kubeproxy_network_programming_duration_seconds_bucket',
          'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
          'kubeproxy_sync_proxy_rules_service_changes_total',
          'kubeproxy_sync_proxy_rules_endpoint_changes_total',
          'bpfproxy_map_entries{map="bpfproxy_fe"}',
          'bpfproxy_map_max_entries{map="bpfproxy_ct"} 512000',
          'bpfproxy_datapath_packets_total{reason="no-endpoints",verdict="reject"}',
          'bpfproxy_conntrack_entries',
          'bpfproxy_dataplane_enabled 1',
        ]) {
          t.ok(body.includes(m), m);
        }
      });

      await t.test('bpfEnabled=false hands back cleanly; true takes over again', async (t) => {
        api.upsert('felixconfigurations', felix('default', { bpfEnabled: false }));
        await until('disabled', () => !agent.enabled);
        await agent.settled();
        t.same(ifaces(), [], 'detached everywhere');
        for (const dev of ['eth0', 'calitest']) {
          const q = spawnSync('nsenter', [`--net=/run/netns/${ns}`, '--', 'tc', 'qdisc', 'show', 'dev', dev], { encoding: 'utf8' });
          t.equal(q.status, 0, q.stderr);
          t.notMatch(q.stdout, /clsact/, `${dev}: the clsact qdisc bpfproxy created is gone too`);
        }
        t.notOk(existsSync(pinDir), 'unpinned');
        await until('annotation removed', () => decap() === undefined);
        t.equal(decap(), undefined, 'handed back: the annotation removed (other nodes SNAT to it)');
        t.same(attachedHere(), [], 'nothing of ours on any hook, tcx or cls');
        // the operator confirms the rollback: status works with the maps unpinned
        // (a child process, awaited: this process's event loop serves the agent meanwhile)
        const st = await cliInAsync(ns, ['status', '--pin-dir', pinDir, '-o', 'json']);
        t.equal(st.status, 0, `status exits 0 with the dataplane off: ${st.stderr}`);
        t.match(JSON.parse(st.stdout), { dataplane: 'off', interfaces: [], maps: null, note: /no maps are pinned/ });
        t.match(await get(10256, '/healthz'), { error: 'ECONNREFUSED' }, 'healthz port free for kube-proxy');
        t.match(await get(32000, '/'), { error: 'ECONNREFUSED' }, 'health check node ports closed');
        api.upsert('felixconfigurations', felix('default', { bpfEnabled: true, bpfKubeProxyHealthzPort: 10256 }));
        await until('enabled again', () => agent.enabled, LOAD_MS);
        await agent.settled();
        t.same(ifaces(), ['calitest', 'eth0']);
        t.ok(agent.runtime!.dp.maps.fe.get({ addr: '10.96.0.10', port: 80, proto: 6 }), 'programmed again from the store');
        await until('annotated again', () => decap() === decapValue());
        t.equal(decap(), decapValue(), 'annotated again');
      });
    },
  );
