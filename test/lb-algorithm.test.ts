/**
 * Choosing the backend selection: the Service annotation
 * service.bpfproxy.io/lb-algorithm (a bad value named, the agent's default
 * kept), carried to every frontend of the Service, and the agent's default
 * applying to external frontends only.
 */
import t from 'tap';
import { LB_ALGORITHM_ANNOTATION, toService } from '../src/sources/convert.js';
import { frontendsFor } from '../src/model/desired.js';
import { lbAlgorithmOf } from '../src/model/types.js';

const svc = (annotations?: Record<string, unknown>) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'web', namespace: 'shop', ...(annotations ? { annotations } : {}) },
  spec: { type: 'LoadBalancer', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, nodePort: 30080 }], selector: { app: 'web' } },
  status: { loadBalancer: { ingress: [{ ip: '198.51.100.1' }] } },
});

t.test('the annotation', async (t) => {
  t.equal(LB_ALGORITHM_ANNOTATION, 'service.bpfproxy.io/lb-algorithm');
  for (const v of ['maglev', 'random'] as const) {
    const r = toService(svc({ [LB_ALGORITHM_ANNOTATION]: v, other: 'x' }));
    t.same(r.problems, [], `${v}: no problem`);
    t.equal(r.value?.lbAlgorithm, v, `${v}: carried`);
  }
  const none = toService(svc({ other: 'x' }));
  t.equal(none.value?.lbAlgorithm, undefined, "no annotation: the agent's default");
  t.notOk('lbAlgorithm' in none.value!, 'and no field at all');

  for (const bad of ['Maglev', 'ring-hash', '', 42]) {
    const r = toService(svc({ [LB_ALGORITHM_ANNOTATION]: bad }));
    t.ok(r.value, `${JSON.stringify(bad)}: the Service is still served`);
    t.equal(r.value?.lbAlgorithm, undefined, `${JSON.stringify(bad)}: the agent's default applies`);
    t.equal(r.problems.length, 1);
    t.match(r.problems[0], {
      object: 'Service shop/web',
      field: `metadata.annotations["${LB_ALGORITHM_ANNOTATION}"]`,
      fatal: false,
      message: /is not a load-balancing algorithm \(random or maglev\); the agent's default \(--lb-algorithm\) applies/,
    });
  }
});

t.test('every frontend of the Service carries its choice', async (t) => {
  const s = toService(svc({ [LB_ALGORITHM_ANNOTATION]: 'maglev' })).value!;
  const fes = frontendsFor(s, [], 'n');
  t.same(
    fes.map((f) => `${f.kind}=${f.lbAlgorithm}`),
    ['ClusterIP=maglev', 'LoadBalancer=maglev', 'NodePort=maglev'],
  );
  const plain = frontendsFor(toService(svc()).value!, [], 'n');
  t.ok(
    plain.every((f) => !('lbAlgorithm' in f)),
    'without the annotation: none',
  );
});

t.test("the agent's default: external frontends only", async (t) => {
  t.equal(lbAlgorithmOf({ kind: 'LoadBalancer' }, 'maglev'), 'maglev');
  t.equal(lbAlgorithmOf({ kind: 'NodePort' }, 'maglev'), 'maglev');
  t.equal(lbAlgorithmOf({ kind: 'ExternalIP' }, 'maglev'), 'maglev');
  t.equal(lbAlgorithmOf({ kind: 'ClusterIP' }, 'maglev'), 'random', 'cluster IPs stay random unless asked');
  t.equal(lbAlgorithmOf({ kind: 'ClusterIP', lbAlgorithm: 'maglev' }, 'random'), 'maglev', 'asked');
  t.equal(lbAlgorithmOf({ kind: 'LoadBalancer', lbAlgorithm: 'random' }, 'maglev'), 'random', 'the Service wins');
  t.equal(lbAlgorithmOf({ kind: 'LoadBalancer' }, 'random'), 'random');
});
