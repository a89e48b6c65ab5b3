/**
 * An externalIP or LoadBalancer IP equal to one of the node's addresses
 * would capture the node's own ports (CVE-2020-8554): refused where the
 * desired frontends are computed, re-evaluated when the addresses change,
 * allowed only when the operator opts in.
 */
import t from 'tap';
import { FakeClock } from '../testkit/fake-clock.js';
import { DEFAULT_SERVICE_POLICY } from '../src/config/services.js';
import type { Dataplane, SyncReport } from '../src/dataplane/dataplane.js';
import { emptyReport } from '../src/dataplane/dataplane.js';
import { desiredFor } from '../src/model/desired.js';
import type { Frontend, Service } from '../src/model/types.js';
import { Proxier } from '../src/proxy/proxier.js';
import { captureLogger } from './helpers/log.js';
import { asService, service } from './helpers/k8s-objects.js';

const NODE_IP = '192.0.2.11';

const svc: Service = {
  namespace: 'shop',
  name: 'web',
  type: 'LoadBalancer',
  clusterIPs: ['10.96.0.10'],
  externalIPs: [NODE_IP, '203.0.113.1'],
  loadBalancerIPs: [NODE_IP],
  ports: [{ name: 'kubelet', protocol: 'TCP', port: 10250, targetPort: 8080, nodePort: 30080 }],
  affinityTimeout: 0,
  externalTrafficPolicy: 'Cluster',
  internalTrafficPolicy: 'Cluster',
  hasSelector: true,
};
const show = (fes: Frontend[]) => fes.map((f) => `${f.kind} ${f.ip}:${f.port}`);

t.test("desired frontends leave out the node's own addresses unless allowed", async (t) => {
  const node = { nodeName: 'n1', nodeAddresses: new Set([NODE_IP]), allowNodeAddressExternalIPs: false };
  const d = desiredFor(svc, [], node);
  t.same(show(d.frontends), ['ClusterIP 10.96.0.10:10250', 'ExternalIP 203.0.113.1:10250', 'NodePort 0.0.0.0:30080']);
  t.same(
    d.problems.map((p) => `${p.field} ${p.frontend}`),
    [`spec.externalIPs ${NODE_IP}:10250/TCP (ExternalIP)`, `status.loadBalancer.ingress ${NODE_IP}:10250/TCP (LoadBalancer)`],
  );
  t.match(
    d.problems[0]!.message,
    /address of this node.*capture the node's own port 10250\/TCP.*CVE-2020-8554.*--allow-node-address-external-ips/,
  );

  const allowed = desiredFor(svc, [], { ...node, allowNodeAddressExternalIPs: true });
  t.equal(allowed.frontends.length, 5, 'opted in: served');
  t.same(allowed.problems, []);

  const clusterOnNode = desiredFor({ ...svc, clusterIPs: [NODE_IP] }, [], { ...node, allowNodeAddressExternalIPs: true });
  t.notOk(
    clusterOnNode.frontends.some((f) => f.kind === 'ClusterIP'),
    'a cluster IP on a node address is never served',
  );
  t.same(
    clusterOnNode.problems.map((p) => p.field),
    ['spec.clusterIPs'],
  );
});

/** A dataplane that keeps what it was told. */
class Recorder implements Dataplane {
  readonly state = new Map<string, readonly Frontend[]>();
  syncService(service: string, frontends: readonly Frontend[]): SyncReport {
    this.state.set(service, frontends);
    return emptyReport();
  }
  syncAll(all: ReadonlyMap<string, readonly Frontend[]>): SyncReport {
    this.state.clear();
    for (const [k, v] of all) this.state.set(k, v);
    return emptyReport();
  }
  setNodeAddresses(): void {}
}

t.test('the proxier refuses, logs with object and field, and re-evaluates when node addresses change', async (t) => {
  const clock = new FakeClock();
  const { log, lines } = captureLogger();
  const dp = new Recorder();
  const p = new Proxier(dp, { nodeName: 'n1', minSyncPeriod: 1000, syncPeriod: 60_000, clock, log, services: DEFAULT_SERVICE_POLICY });
  t.teardown(() => p.stop());
  p.store.applyService('shop/web', asService(service('shop', 'web', '10.96.0.10', { externalIPs: [NODE_IP, '203.0.113.1'] })));
  p.store.applyService('shop/other', asService(service('shop', 'other', '10.96.0.20')));
  p.setNodeAddresses([NODE_IP]);
  p.setSynced();
  await clock.advance(0);
  await p.runner.idle();
  const ips = () => (dp.state.get('shop/web') ?? []).map((f) => f.ip);
  t.same(ips(), ['10.96.0.10', '203.0.113.1'], 'the node address is not served');
  const err = lines.find((l) => l.level === 'error' && l.field === 'spec.externalIPs');
  t.ok(err, 'logged with the field');
  t.match(err!.msg, new RegExp(`Service shop/web: spec.externalIPs: ${NODE_IP} is an address of this node`));
  t.equal(p.stats.problems, 1);

  // The node loses the address: the service gets it back, without a full sync.
  const fullBefore = p.stats.fullSyncs;
  p.setNodeAddresses(['192.0.2.99']);
  await clock.advance(1000);
  await p.runner.idle();
  t.same(ips(), ['10.96.0.10', NODE_IP, '203.0.113.1'], "served once it is no longer the node's");
  t.equal(p.stats.fullSyncs, fullBefore, 'only the services concerned were synced');
  t.ok(lines.some((l) => l.level === 'info' && /shop\/web: programmed, earlier problems resolved/.test(l.msg)));

  // ...and takes it again.
  p.setNodeAddresses(['192.0.2.99', NODE_IP]);
  await clock.advance(1000);
  await p.runner.idle();
  t.same(ips(), ['10.96.0.10', '203.0.113.1'], 'refused again');
});
