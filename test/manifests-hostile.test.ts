/**
 * The manifest source against hostile files, and its cost per change.
 * Every file, however bad, costs one log line naming it and nothing else;
 * a change costs work in proportion to the change.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock } from '../testkit/fake-clock.js';
import { DEFAULT_MAX_FILE_BYTES, ManifestSource, type ManifestSourceOptions } from '../src/sources/manifests.js';
import { DEFAULT_PARSE_LIMITS, parseManifest } from '../src/sources/manifest-parse.js';
import type { Kind, ObjectSink } from '../src/sources/sink.js';
import { captureLogger } from './helpers/log.js';

interface Applied {
  kind: Kind;
  key: string;
  /** the domain object delivered; undefined: withdrawn */
  obj: unknown;
  where: string;
}

/** A sink that records what it is given, as the store would receive it. */
function recordingSink() {
  const calls: Applied[] = [];
  const state = new Map<string, unknown>();
  const record = (kind: Kind) => (key: string, obj: unknown, where: string) => {
    calls.push({ kind, key, obj, where });
    if (obj === undefined) state.delete(`${kind}/${key}`);
    else state.set(`${kind}/${key}`, obj);
  };
  const sink: ObjectSink = {
    applyService: record('Service'),
    applySlice: record('EndpointSlice'),
    applyNode: record('Node'),
    applyFelixConfiguration: record('FelixConfiguration'),
    applyPod: record('Pod'),
    applyNamespace: record('Namespace'),
    applyNetworkPolicy: record('NetworkPolicy'),
  };
  return { sink, calls, state };
}

function setup(t: Test, options: ManifestSourceOptions = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-hostile-'));
  const { sink, calls, state } = recordingSink();
  const { log, lines } = captureLogger();
  const clock = new FakeClock();
  const src = new ManifestSource(dir, sink, log, clock, options);
  t.teardown(() => {
    src.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const problems = () => lines.filter((l) => l.level === 'error' || l.level === 'warn');
  return { dir, src, clock, calls, state, lines, problems };
}

const svc = (name: string, ip: string, extra = '') => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: default }
spec:
  clusterIP: ${ip}
  selector: { app: ${name} }
  ports:
    - { name: http, port: 80 }
${extra}`;

const slice = (name: string, ip: string) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${name}-1, namespace: default, labels: { kubernetes.io/service-name: ${name} } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints: [{ addresses: [${ip}], nodeName: n1 }]
`;

/** "Billion laughs": 9 levels of 9 aliases, under 700 bytes. */
const aliasBomb = `apiVersion: v1
kind: Service
metadata: { name: lol }
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`;

/** Bytes that are not UTF-8 (and no NUL). */
function binary(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x80 | ((i * 7919) & 0x7f);
  return b;
}

const MAX = 256 * 1024;

/** file name -> what its one error line must say (the line starts with the name) */
const HOSTILE: Record<string, RegExp> = {
  'alias-bomb.yaml': /^alias-bomb\.yaml: document 1 expands too many aliases .*; nothing from this file is applied$/,
  'deep-flow.yaml': /^deep-flow\.yaml: document 1 is nested more than 256 levels deep \(line 1\); nothing from this file is applied$/,
  'deep-block.yaml': /^deep-block\.yaml: document 1 is nested more than 256 levels deep/,
  'deep.json': /^deep\.json: document 1 is nested more than 256 levels deep/,
  'binary.yaml': /^binary\.yaml: is not UTF-8 text; nothing from this file is applied$/,
  'nul.yaml': /^nul\.yaml: is not a text file \(it contains NUL bytes\)/,
  'huge.yaml': new RegExp(
    `^huge\\.yaml: is ${MAX + 1} bytes, over the ${MAX}-byte limit for a manifest file \\(--manifest-max-file-size\\); it is not read; nothing from this file is applied$`,
  ),
  'too-many-tokens.yaml': /^too-many-tokens\.yaml: document 1 has more than 20000 YAML tokens/,
  'mixed.yaml': /^mixed\.yaml: document 2 is not valid YAML \(line \d+: .*\); its other documents are applied/,
  'dup-key.yaml': /^dup-key\.yaml: document 1 is not valid YAML \(duplicate key "kind" on line 3\)/,
  'list-scalar.yaml': /^list-scalar\.yaml document 1: kind List with items that are not a list \(number 5\)/,
  'dup-ids.yaml':
    /^dup-ids\.yaml document 2: Service default\/twice is defined twice in this file \(also dup-ids\.yaml document 1\); the first is used$/,
  'bad.json': /^bad\.json: document 1 is not valid JSON \(.*\); nothing from this file is applied$/,
  'loop.yaml': /^loop\.yaml: is a directory, not a manifest file; nothing from this file is applied$/,
  'self.yaml': /^self\.yaml: cannot be read \(ELOOP: too many symbolic links/,
  'fifo.yaml': /^fifo\.yaml: is not a regular file, not a manifest file/,
  'circular.yaml':
    /^circular\.yaml document 1: Service default\/circle cannot be serialised \(Converting circular structure to JSON\); skipped$/,
};

function writeCorpus(dir: string): void {
  const w = (name: string, data: string | Buffer) => writeFileSync(join(dir, name), data);
  w('alias-bomb.yaml', aliasBomb);
  w('deep-flow.yaml', '['.repeat(100_000));
  w('deep-block.yaml', `${'- '.repeat(50_000)}x\n`);
  w('deep.json', `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`);
  w('binary.yaml', binary(4096));
  w('nul.yaml', 'apiVersion: v1\nkind: Service\0\n');
  w('huge.yaml', `# ${'x'.repeat(MAX - 2)}\n`);
  w('too-many-tokens.yaml', `{${Array.from({ length: 10_000 }, (_, i) => `k${i}: v`).join(', ')}}`);
  w('mixed.yaml', `${svc('mixed-a', '10.96.1.1')}---\nkind: Service\nmetadata: [unclosed\n---\n${svc('mixed-c', '10.96.1.3')}`);
  w('dup-key.yaml', 'apiVersion: v1\nkind: Service\nkind: Service\nmetadata: { name: dupkey }\n');
  w(
    'list-junk.yaml',
    `apiVersion: v1
kind: List
items:
  - 1
  - null
  - "just a string"
  - [a, list]
  - { kind: Service, metadata: { name: no-api-version } }
  - apiVersion: v1
    kind: Service
    metadata: { name: from-list, namespace: default }
    spec: { clusterIP: 10.96.2.1, ports: [{ port: 80 }] }
`,
  );
  w('list-scalar.yaml', 'apiVersion: v1\nkind: List\nitems: 5\n');
  w('dup-ids.yaml', `${svc('twice', '10.96.3.1')}---\n${svc('twice', '10.96.3.2')}`);
  w(
    'good.json',
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'from-json', namespace: 'default' },
      spec: { clusterIP: '10.96.4.1', ports: [{ port: 80 }] },
    }),
  );
  w('bad.json', '{\n  "apiVersion": "v1",\n  "kind": }\n');
  w(
    'big-scalar.yaml',
    svc('big-annotation', '10.96.5.1').replace(
      'namespace: default }',
      `namespace: default, annotations: { note: "${'y'.repeat(MAX - 1024)}" } }`,
    ),
  );
  w('circular.yaml', 'apiVersion: v1\nkind: Service\nmetadata: &m { name: circle, namespace: default, self: *m }\n');
  symlinkSync('.', join(dir, 'loop.yaml'));
  symlinkSync('self.yaml', join(dir, 'self.yaml'));
  execFileSync('mkfifo', [join(dir, 'fifo.yaml')]);
}

t.test('hostile corpus: one error line per file naming it, the good objects applied, nothing thrown', async (t) => {
  const { dir, src, clock, state, problems } = setup(t, { maxFileBytes: MAX, limits: { maxDocumentTokens: 20_000 } });
  writeCorpus(dir);
  const t0 = performance.now();
  t.doesNotThrow(() => src.start(), 'start does not throw');
  const ms = performance.now() - t0;
  // A safety net against a hang or a blow-up, not a performance figure.
  t.ok(ms < 60_000, `the whole corpus read in ${ms.toFixed(0)} ms`);

  const errs = problems();
  for (const [file, re] of Object.entries(HOSTILE)) {
    const mine = errs.filter((l) => l.msg.startsWith(file));
    t.equal(mine.length, 1, `${file}: one line (${mine.map((l) => l.msg.slice(0, 160)).join(' | ') || 'none'})`);
    t.match(mine[0]?.msg ?? '', re, `${file}: says what and what happens next`);
  }
  const junk = errs.filter((l) => l.msg.startsWith('list-junk.yaml')).map((l) => l.msg);
  t.same(
    junk.map((m) => /item (\d+)/.exec(m)?.[1]),
    ['1', '2', '3', '4', '5'],
    'each junk List item named by number',
  );
  t.match(junk[4] ?? '', /item 5: Service apiVersion \(missing\) is not v1; skipped/);
  t.same(
    [...state.keys()].sort(),
    [
      'Service/default/big-annotation',
      'Service/default/from-json',
      'Service/default/from-list',
      'Service/default/mixed-a',
      'Service/default/mixed-c',
      'Service/default/twice',
    ],
    'every good object applied, and only those',
  );
  t.match(state.get('Service/default/twice'), { clusterIPs: ['10.96.3.1'] }, 'the first of a duplicate is used');
  const named = new Set([...Object.keys(HOSTILE), 'list-junk.yaml']);
  t.same(
    errs.filter((l) => ![...named].some((f) => l.msg.startsWith(f))).map((l) => l.msg),
    [],
    'no other problem lines',
  );

  // Polls re-read nothing and say nothing more: every problem is logged once.
  const before = problems().length;
  const parsed = src.stats.filesParsed;
  for (let i = 0; i < 5; i++) await clock.advance(250);
  t.equal(problems().length, before, 'no line repeated by polling');
  t.equal(src.stats.filesParsed, parsed, 'no file parsed again');
});

t.test('hostile files dropped into a running source keep the last good objects', async (t) => {
  const { dir, src, clock, state, problems } = setup(t, { maxFileBytes: MAX });
  const f = join(dir, 'web.yaml');
  writeFileSync(f, `${svc('web', '10.96.0.1')}---\n${slice('web', '10.0.0.1')}`);
  src.start();
  t.same([...state.keys()].sort(), ['EndpointSlice/default/web-1', 'Service/default/web']);
  const steps: Array<[string, string | Buffer, RegExp]> = [
    ['alias bomb', aliasBomb, /^web\.yaml: document 1 expands too many aliases .*; keeping this file's last good objects \(2\)$/],
    [
      'deep nesting',
      '['.repeat(50_000),
      /^web\.yaml: document 1 is nested more than 256 levels deep .*; keeping this file's last good objects \(2\)$/,
    ],
    ['binary', binary(1000), /^web\.yaml: is not UTF-8 text; keeping this file's last good objects \(2\)$/],
    [
      'over the size limit',
      `#${'z'.repeat(MAX)}\n`,
      /^web\.yaml: is \d+ bytes, over the \d+-byte limit .*; keeping this file's last good objects \(2\)$/,
    ],
    ['not YAML', 'kind: [\n', /^web\.yaml: document 1 is not valid YAML \(line \d+: .*\); keeping this file's last good objects \(2\)$/],
  ];
  for (const [what, data, re] of steps) {
    const n = problems().length;
    writeFileSync(f, data);
    bump(f);
    await clock.advance(300);
    const added = problems().slice(n);
    t.equal(added.length, 1, `${what}: one line`);
    t.match(added[0]?.msg ?? '', re, `${what}: ${added[0]?.msg.slice(0, 200) ?? '(none)'}`);
    t.same([...state.keys()].sort(), ['EndpointSlice/default/web-1', 'Service/default/web'], `${what}: nothing withdrawn`);
  }
  writeFileSync(f, svc('web', '10.96.0.9'));
  bump(f);
  await clock.advance(300);
  t.same([...state.keys()], ['Service/default/web'], 'a clean file applies again, and what it no longer defines is withdrawn');
  t.match(state.get('Service/default/web'), { clusterIPs: ['10.96.0.9'] });
});

/** Make sure a rewrite within the same clock tick is seen as a change. */
function bump(path: string): void {
  const now = Date.now() / 1000;
  utimesSync(path, now, now + Math.random());
}

t.test('a broken document among good ones: the good ones apply, the broken one is named, its old object kept', async (t) => {
  const { dir, src, calls, state, problems } = setup(t);
  const f = join(dir, 'three.yaml');
  writeFileSync(f, [svc('a', '10.96.0.1'), svc('b', '10.96.0.2'), svc('c', '10.96.0.3')].join('---\n'));
  src.scan();
  t.equal(calls.length, 3);
  calls.length = 0;
  writeFileSync(f, [svc('a', '10.96.0.11'), 'kind: Service\nmetadata: { name: b\n', svc('c', '10.96.0.33')].join('---\n'));
  bump(f);
  src.scan();
  t.same(
    calls.map((c) => c.key),
    ['default/a', 'default/c'],
    'the two good documents apply',
  );
  t.match(state.get('Service/default/b'), { clusterIPs: ['10.96.0.2'] }, 'the broken one withdraws nothing');
  const errs = problems();
  t.equal(errs.length, 1);
  t.match(
    errs[0]!.msg,
    /^three\.yaml: document 2 is not valid YAML \(line \d+: .*\); its other documents are applied; objects it no longer defines are kept until it reads cleanly$/,
  );
  t.equal(errs[0]!.document, 2, 'the document number is a field too');
  calls.length = 0;
  writeFileSync(f, [svc('a', '10.96.0.11'), svc('c', '10.96.0.33')].join('---\n'));
  bump(f);
  src.scan();
  t.same(
    calls.map((c) => [c.key, c.obj === undefined]),
    [['default/b', true]],
    'once the file reads cleanly, what it dropped is withdrawn',
  );
});

t.test('a change costs work for the changed document only', async (t) => {
  const { dir, src, calls, state } = setup(t);
  const files = 50;
  const perFile = 10; // 5 Services + 5 EndpointSlices
  const body = (i: number, ip = 1) =>
    Array.from(
      { length: perFile / 2 },
      (_, j) => `${svc(`s${i}-${j}`, `10.96.${i}.${j + 1}`)}---\n${slice(`s${i}-${j}`, `10.0.${i}.${j + ip}`)}`,
    ).join('---\n');
  for (let i = 0; i < files; i++) writeFileSync(join(dir, `f${String(i).padStart(2, '0')}.yaml`), body(i));
  src.scan();
  t.equal(state.size, files * perFile);

  // Count every serialisation: the old code serialised every object twice per change.
  const stringify = JSON.stringify;
  let serialised = 0;
  JSON.stringify = ((...a: Parameters<typeof stringify>) => {
    serialised++;
    return stringify(...a);
  }) as typeof stringify;
  t.teardown(() => {
    JSON.stringify = stringify;
  });

  const base = { ...src.stats };
  calls.length = 0;
  const f7 = join(dir, 'f07.yaml');
  // One EndpointSlice of one file changes.
  writeFileSync(f7, body(7).replace('addresses: [10.0.7.1]', 'addresses: [10.0.7.99]'));
  bump(f7);
  src.scan();
  JSON.stringify = stringify;
  t.same(
    calls.map((c) => `${c.kind}/${c.key}`),
    ['EndpointSlice/default/s7-0-1'],
    'only the changed object is applied',
  );
  t.ok(serialised <= 1, `objects of unchanged files and documents are not serialised (${serialised} serialisations)`);
  t.equal(src.stats.filesParsed - base.filesParsed, 1, 'only the changed file is parsed');
  t.equal(src.stats.documentsParsed - base.documentsParsed, 1, 'only the changed document is parsed');
  t.equal(src.stats.objectsDigested - base.objectsDigested, 1, 'only the changed object is digested');

  // Touched but identical: nothing parsed, nothing applied.
  calls.length = 0;
  bump(f7);
  src.scan();
  t.equal(src.stats.filesParsed - base.filesParsed, 1, 'a touched, unchanged file is not parsed');
  t.same(calls, []);

  // An object moved from one file to another unchanged is not applied again.
  const moved = svc('s7-0', '10.96.7.1');
  writeFileSync(f7, body(7).replace('addresses: [10.0.7.1]', 'addresses: [10.0.7.99]').replace(`${moved}---\n`, ''));
  writeFileSync(join(dir, 'zz-moved.yaml'), moved);
  bump(f7);
  src.scan();
  t.same(calls, [], 'a move between files applies nothing');
  t.match(state.get('Service/default/s7-0'), { clusterIPs: ['10.96.7.1'] });
});

t.test('duplicates across files: the first file wins; when it goes, the next one applies', async (t) => {
  const { dir, src, calls, state, problems } = setup(t);
  writeFileSync(join(dir, 'a.yaml'), svc('dup', '10.96.0.1'));
  writeFileSync(join(dir, 'b.yaml'), svc('dup', '10.96.0.2'));
  src.scan();
  t.match(state.get('Service/default/dup'), { clusterIPs: ['10.96.0.1'] });
  t.same(
    problems().map((l) => l.msg),
    ['b.yaml document 1: Service default/dup is also defined in a.yaml document 1; that one is used'],
  );
  src.scan();
  t.equal(problems().length, 1, 'said once, not at every scan');
  calls.length = 0;
  rmSync(join(dir, 'a.yaml'));
  src.scan();
  t.same(
    calls.map((c) => [c.key, c.where]),
    [['default/dup', 'b.yaml document 1']],
    'the remaining definition applies',
  );
  t.match(state.get('Service/default/dup'), { clusterIPs: ['10.96.0.2'] });
  calls.length = 0;
  rmSync(join(dir, 'b.yaml'));
  src.scan();
  t.same(
    calls.map((c) => [c.key, c.obj]),
    [['default/dup', undefined]],
    'withdrawn with its last definition',
  );
});

t.test('a manifest directory that cannot be read keeps its objects and is reported once', async (t) => {
  const { dir, src, clock, state, calls, lines, problems } = setup(t);
  writeFileSync(join(dir, 'x.yaml'), svc('x', '10.96.0.1'));
  src.start();
  t.ok(state.has('Service/default/x'));
  // (Tests run as root, which reads any directory: take it away instead.)
  rmSync(dir, { recursive: true });
  for (let i = 0; i < 4; i++) await clock.advance(250);
  t.ok(state.has('Service/default/x'), 'nothing withdrawn');
  t.same(
    problems().map((l) => l.msg.replaceAll(dir, '<dir>')),
    [
      "cannot read manifest directory <dir>: ENOENT: no such file or directory, scandir '<dir>'; keeping the objects of the files in it until it can be read",
    ],
    'said once over several polls',
  );
  mkdirSync(dir);
  writeFileSync(join(dir, 'x.yaml'), svc('x', '10.96.0.1'));
  calls.length = 0;
  await clock.advance(250);
  t.ok(
    lines.some((l) => l.level === 'info' && /can be read again/.test(l.msg)),
    'its return is said',
  );
  t.same(calls, [], 'the same content applies nothing');
});

t.test('a file with many problems costs a bounded number of lines', async (t) => {
  const { dir, src, problems } = setup(t);
  writeFileSync(join(dir, 'junk.yaml'), `apiVersion: v1\nkind: List\nitems:\n${'  - 42\n'.repeat(1000)}`);
  src.scan();
  const lines = problems().map((l) => l.msg);
  t.equal(lines.length, 21, '20 problems, then one line for the rest');
  t.equal(lines[20], 'junk.yaml: 980 more problems in this file, not logged');
});

t.test('files are parsed a document at a time: numbers and lines as a reader counts them, unchanged documents reused', async (t) => {
  const S = (n: string) => `apiVersion: v1\nkind: Service\nmetadata: { name: ${n} }\n`;
  const wheres = (text: string) => {
    const r = parseManifest('f.yaml', Buffer.from(text), false);
    return { objects: [...r.objects.values()].map((o) => o.where), broken: r.broken.map((b) => `${b.document} ${b.reason}`), good: r.good };
  };
  const two = ['f.yaml document 1', 'f.yaml document 2'];
  t.same(wheres(`# a header\n\n---\n${S('a')}---\n${S('b')}`).objects, two, 'a comment header is not a document');
  t.same(wheres(`${S('a')}---\n${S('b')}`).objects, two, 'the first document needs no ---');
  t.same(wheres(`${S('a')}...\n${S('b')}`).objects, two, '... ends a document');
  t.same(wheres(`%YAML 1.2\n---\n${S('a')}---\n${S('b')}`).objects, two, 'directives: read whole');
  t.same(wheres(`${S('a')}---\n${S('b')}`.replace(/\n/g, '\r\n')).objects, two, 'CRLF');
  t.same(wheres(`${S('a')}data: |\n  ---\n  x\n---\n${S('b')}`).objects, two, 'an indented --- inside a block scalar is text');
  t.same(
    wheres(`--- {apiVersion: v1, kind: Service, metadata: {name: a}}\n--- {apiVersion: v1, kind: Service, metadata: {name: b}}\n`).objects,
    two,
    'content on the --- line',
  );
  t.same(
    wheres(`${S('a')}---\n${S('b')}kind: Service\n`).broken,
    ['2 is not valid YAML (duplicate key "kind" on line 8)'],
    'lines count from the top of the file',
  );
  t.same(
    wheres(`${S('a')}---\n${S('b')}---\nkind: Service\nmetadata: [x\n---\n${S('c')}`).broken.map((b) => b.replace(/: .*/, '')),
    ['3 is not valid YAML (line 11'],
    'a broken document is numbered, and the documents after it still read',
  );
  t.same(wheres('').good, 1, 'an empty file is one empty document');
  const capped = (text: string) => parseManifest('f.yaml', Buffer.from(text), false, { ...DEFAULT_PARSE_LIMITS, maxDocuments: 3 });
  for (const [what, text] of [
    ['--- parts', [1, 2, 3, 4, 5].map((i) => S(`s${i}`)).join('---\n')],
    ['... ends', [1, 2, 3, 4, 5].map((i) => S(`s${i}`)).join('...\n')],
  ]) {
    const r = capped(text!);
    t.same(
      [...r.objects.keys()],
      ['Service/default/s1', 'Service/default/s2', 'Service/default/s3'],
      `${what}: documents up to the limit are read`,
    );
    t.same(
      r.broken,
      [{ document: 4, reason: 'is past the limit of 3 documents in one file: it and the rest of the file are not read' }],
      `${what}: the rest is named`,
    );
  }

  const v1 = Array.from({ length: 20 }, (_, i) => S(`s${i}`)).join('---\n');
  const first = parseManifest('f.yaml', Buffer.from(v1), false);
  t.equal(first.parsedDocuments, 20);
  const v2 = v1.replace('name: s7 }', 'name: s7, labels: { x: y } }');
  const again = parseManifest('f.yaml', Buffer.from(v2), false, undefined, first.parts);
  const fresh = parseManifest('f.yaml', Buffer.from(v2), false);
  t.equal(again.parsedDocuments, 1, 'only the changed document is parsed again');
  t.equal(again.digests, 1, 'and only its object digested');
  t.same([...again.objects.entries()], [...fresh.objects.entries()], 'the same result as parsing it all');
});

t.test('the size limit defaults to 8 MiB', async (t) => {
  t.equal(DEFAULT_MAX_FILE_BYTES, 8 * 1024 * 1024);
});
