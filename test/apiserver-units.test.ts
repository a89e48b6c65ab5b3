/**
 * The test API server's pieces on their own: the three patch formats,
 * field sets and server-side apply, selectors, names, ages, protobuf.
 */
import t from 'tap';
import { apply, fieldSetOf, fromFieldsV1, toFieldsV1 } from '../testkit/apiserver/fieldmanager.js';
import { jsonPatch, mergePatch, strategicMergePatch } from '../testkit/apiserver/patch.js';
import { decodeProtobuf } from '../testkit/apiserver/protobuf.js';
import { builtinSchemas, fromCrd } from '../testkit/apiserver/registry.js';
import { builtinKinds } from '../testkit/apiserver/kinds.js';
import { parseFieldSelector, parseLabelSelector, pathGetter } from '../testkit/apiserver/selectors.js';
import { humanDuration } from '../testkit/apiserver/table.js';
import { nameProblem } from '../testkit/apiserver/validate.js';
import { ApiError } from '../testkit/apiserver/errors.js';
import { felixCrd } from '../testkit/fake-apiserver.js';

type Obj = Record<string, unknown>;
const kinds = builtinKinds();
const kind = (plural: string, group = ''): (typeof kinds)[number] => kinds.find((k) => k.plural === plural && k.group === group)!;
const code = (f: () => unknown): number | undefined => {
  try {
    f();
  } catch (e) {
    return e instanceof ApiError ? e.code : -1;
  }
  return undefined;
};

t.test('JSON merge patch (RFC 7386 appendix A)', (t) => {
  t.same(mergePatch({ a: 'b' }, { a: 'c' }), { a: 'c' });
  t.same(mergePatch({ a: 'b' }, { b: 'c' }), { a: 'b', b: 'c' });
  t.same(mergePatch({ a: 'b' }, { a: null }), {});
  t.same(mergePatch({ a: ['b'] }, { a: 'c' }), { a: 'c' });
  t.same(mergePatch({ a: { b: 'c' } }, { a: { b: 'd', c: null } }), { a: { b: 'd' } });
  t.same(mergePatch({ a: [{ b: 'c' }] }, { a: [1] }), { a: [1] }, 'lists are replaced');
  t.same(mergePatch({ e: null }, { a: 1 }), { e: null, a: 1 });
  t.end();
});

t.test('JSON patch (RFC 6902)', (t) => {
  const doc = { spec: { ports: [{ port: 80 }], type: 'ClusterIP' } };
  t.same(jsonPatch(doc, [{ op: 'add', path: '/spec/ports/-', value: { port: 81 } }]), {
    spec: { ports: [{ port: 80 }, { port: 81 }], type: 'ClusterIP' },
  });
  t.same(jsonPatch(doc, [{ op: 'add', path: '/spec/ports/0', value: { port: 79 } }]), {
    spec: { ports: [{ port: 79 }, { port: 80 }], type: 'ClusterIP' },
  });
  t.same(
    jsonPatch(doc, [
      { op: 'replace', path: '/spec/type', value: 'NodePort' },
      { op: 'test', path: '/spec/type', value: 'NodePort' },
    ]),
    { spec: { ports: [{ port: 80 }], type: 'NodePort' } },
  );
  t.same(jsonPatch(doc, [{ op: 'move', from: '/spec/type', path: '/kind' }]), { spec: { ports: [{ port: 80 }] }, kind: 'ClusterIP' });
  t.same(jsonPatch(doc, [{ op: 'copy', from: '/spec/ports/0', path: '/spec/ports/1' }]), {
    spec: { ports: [{ port: 80 }, { port: 80 }], type: 'ClusterIP' },
  });
  t.same(jsonPatch({ 'a/b': { '~c': 1 } }, [{ op: 'remove', path: '/a~1b/~0c' }]), { 'a/b': {} }, 'escaped pointers');
  t.same(doc, { spec: { ports: [{ port: 80 }], type: 'ClusterIP' } }, 'the original is not touched');
  t.equal(
    code(() => jsonPatch(doc, [{ op: 'test', path: '/spec/type', value: 'x' }])),
    422,
    'a failed test',
  );
  t.equal(
    code(() => jsonPatch(doc, [{ op: 'remove', path: '/spec/nope' }])),
    422,
    'a missing member',
  );
  t.equal(
    code(() => jsonPatch(doc, [{ op: 'replace', path: '/spec/ports/5', value: 1 }])),
    422,
    'an index out of range',
  );
  t.equal(
    code(() => jsonPatch(doc, [{ op: 'add', path: 'spec', value: 1 }])),
    400,
    'a pointer without "/"',
  );
  t.equal(
    code(() => jsonPatch(doc, [{ op: 'frobnicate', path: '/a' }])),
    400,
    'an unknown op',
  );
  t.equal(
    code(() => jsonPatch(doc, { op: 'add' })),
    400,
    'not a list',
  );
  t.end();
});

t.test('strategic merge patch, as kubectl sends it', (t) => {
  const svc = kind('services').schema;
  const pod = kind('pods').schema;
  const live: Obj = {
    spec: {
      ports: [
        { name: 'a', port: 80, protocol: 'TCP' },
        { name: 'b', port: 81 },
      ],
      selector: { app: 'x', tier: 'y' },
    },
  };
  t.same(
    strategicMergePatch(builtinSchemas, live, { spec: { ports: [{ port: 81, targetPort: 8081 }, { port: 82 }] } }, svc),
    {
      spec: {
        ports: [{ name: 'a', port: 80, protocol: 'TCP' }, { name: 'b', port: 81, targetPort: 8081 }, { port: 82 }],
        selector: { app: 'x', tier: 'y' },
      },
    },
    'ports merge by port',
  );
  t.same(
    strategicMergePatch(builtinSchemas, live, { spec: { ports: [{ port: 80, $patch: 'delete' }], selector: { tier: null } } }, svc),
    {
      spec: { ports: [{ name: 'b', port: 81 }], selector: { app: 'x' } },
    },
    '$patch: delete by key; null deletes a map key',
  );
  t.same(
    strategicMergePatch(builtinSchemas, live, { spec: { ports: [{ $patch: 'replace' }, { port: 9 }] } }, svc),
    { spec: { ports: [{ port: 9 }], selector: { app: 'x', tier: 'y' } } },
    '$patch: replace on a list',
  );
  t.same(
    strategicMergePatch(builtinSchemas, live, { spec: { selector: { $patch: 'replace', only: 'me' } } }, svc),
    { spec: { ports: (live.spec as Obj).ports, selector: { only: 'me' } } },
    '$patch: replace on a map',
  );
  t.same(
    strategicMergePatch(
      builtinSchemas,
      live,
      { spec: { '$setElementOrder/ports': [{ port: 81 }, { port: 80 }], ports: [{ port: 80, name: 'A' }] } },
      svc,
    ),
    {
      spec: {
        ports: [
          { name: 'b', port: 81 },
          { name: 'A', port: 80, protocol: 'TCP' },
        ],
        selector: { app: 'x', tier: 'y' },
      },
    },
    '$setElementOrder reorders',
  );
  const p: Obj = {
    metadata: { finalizers: ['a', 'b'] },
    spec: {
      containers: [{ name: 'c', image: 'i:1', env: [{ name: 'X', value: '1' }] }],
      volumes: [{ name: 'v', hostPath: { path: '/x' } }],
    },
  };
  t.same(
    strategicMergePatch(builtinSchemas, p, { metadata: { finalizers: ['c'], '$deleteFromPrimitiveList/finalizers': ['a'] } }, pod),
    { ...p, metadata: { finalizers: ['b', 'c'] } },
    'merging primitive lists and $deleteFromPrimitiveList',
  );
  t.same(
    strategicMergePatch(
      builtinSchemas,
      p,
      {
        spec: {
          containers: [{ name: 'c', env: [{ name: 'Y', value: '2' }] }],
          volumes: [{ name: 'v', $retainKeys: ['name', 'emptyDir'], emptyDir: {} }],
        },
      },
      pod,
    ),
    {
      ...p,
      spec: {
        containers: [
          {
            name: 'c',
            image: 'i:1',
            env: [
              { name: 'X', value: '1' },
              { name: 'Y', value: '2' },
            ],
          },
        ],
        volumes: [{ name: 'v', emptyDir: {} }],
      },
    },
    'containers by name, env by name, $retainKeys on a volume',
  );
  t.equal(
    code(() => strategicMergePatch(builtinSchemas, live, { spec: { ports: [{ name: 'no-key' }] } }, svc)),
    400,
    'an item without its merge key',
  );
  t.same(
    strategicMergePatch(builtinSchemas, p, { spec: { tolerations: [{ operator: 'Exists' }] } }, pod),
    { ...p, spec: { ...(p.spec as Obj), tolerations: [{ operator: 'Exists' }] } },
    'atomic lists replace',
  );
  t.end();
});

t.test('field sets and fieldsV1', (t) => {
  const svc = kind('services').schema;
  const set = fieldSetOf(
    builtinSchemas,
    { metadata: { labels: { app: 'x' }, finalizers: ['f'] }, spec: { ports: [{ port: 80, name: 'http' }], selector: { app: 'x' } } },
    svc,
  );
  t.same(
    toFieldsV1(set),
    {
      'f:metadata': { 'f:finalizers': { 'v:"f"': {} }, 'f:labels': { 'f:app': {} } },
      'f:spec': { 'f:ports': { 'k:{"port":80,"protocol":"TCP"}': { '.': {}, 'f:name': {}, 'f:port': {} } }, 'f:selector': {} },
    },
    'map entries, set members, list items keyed with the defaulted protocol, the atomic selector a leaf',
  );
  t.same([...fromFieldsV1(toFieldsV1(set))].sort(), [...set].sort(), 'round trip');
  t.end();
});

t.test('server-side apply', (t) => {
  const felix = fromCrd(felixCrd())[0]!;
  const track = (manager: string, force = false) => ({
    schemas: builtinSchemas,
    schema: felix.schema,
    manager,
    apiVersion: 'crd.projectcalico.org/v1',
    scope: 'main' as const,
    resetsStatus: false,
    now: '2025-01-01T00:00:00Z',
    force,
    kindName: 'felixconfigurations',
    name: 'default',
  });
  const cfg = (spec: Obj): Obj => ({
    apiVersion: 'crd.projectcalico.org/v1',
    kind: 'FelixConfiguration',
    metadata: { name: 'default' },
    spec,
  });
  const a = apply(undefined, cfg({ bpfEnabled: true, bpfLogLevel: 'Info' }), track('a'));
  t.match(a, {
    spec: { bpfEnabled: true, bpfLogLevel: 'Info' },
    metadata: {
      managedFields: [{ manager: 'a', operation: 'Apply', fieldsV1: { 'f:spec': { 'f:bpfEnabled': {}, 'f:bpfLogLevel': {} } } }],
    },
  });
  const b = apply(a, cfg({ bpfEnabled: true, bpfDataIfacePattern: 'eth0' }), track('b'));
  t.same(
    (b.metadata as Obj).managedFields,
    [
      {
        manager: 'a',
        operation: 'Apply',
        apiVersion: 'crd.projectcalico.org/v1',
        time: '2025-01-01T00:00:00Z',
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:spec': { 'f:bpfEnabled': {}, 'f:bpfLogLevel': {} } },
      },
      {
        manager: 'b',
        operation: 'Apply',
        apiVersion: 'crd.projectcalico.org/v1',
        time: '2025-01-01T00:00:00Z',
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:spec': { 'f:bpfDataIfacePattern': {}, 'f:bpfEnabled': {} } },
      },
    ],
    'the same value is co-owned',
  );
  const err = (() => {
    try {
      apply(b, cfg({ bpfEnabled: false }), track('b'));
    } catch (e) {
      return e as ApiError;
    }
    return undefined;
  })();
  t.match(err, {
    code: 409,
    reason: 'Conflict',
    message: 'Apply failed with 1 conflict: conflict with "a": .spec.bpfEnabled',
    details: { causes: [{ reason: 'FieldManagerConflict', field: '.spec.bpfEnabled' }] },
  });
  const forced = apply(b, cfg({ bpfEnabled: false }), track('b', true));
  t.same(forced.spec, { bpfEnabled: false, bpfLogLevel: 'Info' }, "b dropped bpfDataIfacePattern (only b owned it); a's bpfLogLevel stays");
  t.same(
    (forced.metadata as Obj).managedFields,
    [
      {
        manager: 'a',
        operation: 'Apply',
        apiVersion: 'crd.projectcalico.org/v1',
        time: '2025-01-01T00:00:00Z',
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:spec': { 'f:bpfLogLevel': {} } },
      },
      {
        manager: 'b',
        operation: 'Apply',
        apiVersion: 'crd.projectcalico.org/v1',
        time: '2025-01-01T00:00:00Z',
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:spec': { 'f:bpfEnabled': {} } },
      },
    ],
    'forced: b took bpfEnabled from a',
  );
  t.end();
});

t.test('selectors', (t) => {
  const l = (s: string, labels: Record<string, string>): boolean => parseLabelSelector(s)(labels);
  t.ok(l('a=b', { a: 'b' }));
  t.ok(l('a==b,c!=d', { a: 'b', c: 'e' }));
  t.ok(l('c!=d', {}), '!= matches a missing key');
  t.ok(l('a in (x, b),e notin (f)', { a: 'b' }));
  t.notOk(l('a in (x,y)', { a: 'b' }));
  t.ok(l('a,!z', { a: '' }));
  t.notOk(l('!a', { a: '' }));
  t.ok(l('', { any: 'thing' }), 'empty selects everything');
  t.equal(
    code(() => parseLabelSelector('a b c')),
    400,
  );
  const f = parseFieldSelector(
    'metadata.name=x,spec.nodeName!=n1',
    { 'metadata.name': pathGetter('metadata.name'), 'spec.nodeName': pathGetter('spec.nodeName') },
    'Pod',
  );
  t.ok(f({ metadata: { name: 'x' }, spec: { nodeName: 'n2' } }));
  t.notOk(f({ metadata: { name: 'x' }, spec: { nodeName: 'n1' } }));
  t.equal(
    code(() => parseFieldSelector('spec.foo=1', {}, 'Pod')),
    400,
  );
  t.end();
});

t.test('names and ages as the real server writes them', (t) => {
  t.equal(nameProblem('dns1035', 'web'), undefined);
  t.match(nameProblem('dns1035', '1web'), /DNS-1035 label/);
  t.equal(nameProblem('subdomain', '1.web-x'), undefined);
  t.match(nameProblem('subdomain', 'Web'), /RFC 1123 subdomain/);
  t.match(nameProblem('label', 'a.b'), /RFC 1123 label/);
  t.equal(nameProblem('path', 'system:node'), undefined);
  t.match(nameProblem('path', 'a/b'), /may not contain '\/'/);
  const s = 1000;
  t.same(
    [0, 119, 120, 599, 600, 3 * 3600 - 1, 3 * 3600, 8 * 3600 - 60, 47 * 3600, 48 * 3600, 8 * 86400, 3 * 365 * 86400].map((x) =>
      humanDuration(x * s),
    ),
    ['0s', '119s', '2m', '9m59s', '10m', '179m', '3h', '7h59m', '47h', '2d', '8d', '3y'],
  );
  t.end();
});

t.test('protobuf: the envelope kubectl create namespace sends', (t) => {
  const varint = (n: number): number[] => {
    const out: number[] = [];
    while (n > 127) {
      out.push((n & 127) | 128);
      n >>>= 7;
    }
    return [...out, n];
  };
  const field = (num: number, payload: Buffer | string): Buffer => {
    const b = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    return Buffer.concat([Buffer.from([(num << 3) | 2, ...varint(b.length)]), b]);
  };
  const entry = (k: string, v: string): Buffer => Buffer.concat([field(1, k), field(2, v)]);
  const meta = Buffer.concat([field(1, 'team-a'), field(2, ''), field(3, ''), field(11, entry('tier', 'front'))]);
  const ns = Buffer.concat([field(1, meta), field(2, Buffer.alloc(0))]);
  const body = Buffer.concat([
    Buffer.from('k8s\0', 'latin1'),
    field(1, Buffer.concat([field(1, 'v1'), field(2, 'Namespace')])),
    field(2, ns),
    field(3, ''),
    field(4, 'application/vnd.kubernetes.protobuf'),
  ]);
  t.same(decodeProtobuf(body), { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team-a', labels: { tier: 'front' } }, spec: {} });
  const pod = Buffer.concat([
    Buffer.from('k8s\0', 'latin1'),
    field(1, Buffer.concat([field(1, 'v1'), field(2, 'Pod')])),
    field(2, Buffer.alloc(0)),
  ]);
  t.equal(
    code(() => decodeProtobuf(pod)),
    415,
    'a kind it cannot read: 415, send JSON',
  );
  t.equal(
    code(() => decodeProtobuf(body.subarray(0, 12))),
    400,
    'truncated',
  );
  t.end();
});
