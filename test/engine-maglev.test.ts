/**
 * Maglev in the vector engine: for the same packets, the engine's lb node
 * picks the backend the BPF path picks (BPF_PROG_RUN of tc_data over the
 * maps the reconciler wrote), because both get the same tables
 * (src/model/maglev.ts, sized and seeded alike) and hash a flow alike
 * (jhash2 with the fixed seed). Checked over LoadBalancer IPs, NodePorts,
 * the node-local table of a Local traffic policy, a set of 300 endpoints,
 * and again after a backend leaves; random frontends stay random; a live
 * change of the Maglev sizing rebuilds the engine's tables.
 */
import t, { type Test } from 'tap';
import { BpfReconciler, DEFAULT_LOAD_BALANCING, type LoadBalancing } from '../src/dataplane/bpf/reconciler.js';
import { EngineDataplane } from '../src/dataplane/afxdp/dataplane.js';
import { createEngine } from '../src/dataplane/afxdp/native.js';
import { EngineFeFlags } from '../src/dataplane/afxdp/table.js';
import { ctTimeoutsNs } from '../src/config/datapath.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { maglevFlowHash, maglevTable, maglevTableSize } from '../src/model/maglev.js';
import type { Backend, Frontend } from '../src/model/types.js';
import { frame, parseFrame, TCP } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { NODE_IP, progrunNode } from './helpers/progrun-node.js';

const LB_IP = '198.51.100.10';
const ETP_IP = '198.51.100.40';
const MANY_IP = '198.51.100.50';
const RANDOM_IP = '198.51.100.20';
const NODEPORT = 30080;
const NODE_MAC = '02:00:00:00:0a:01';
const name = (b: Backend) => `${b.ip}:${b.port}`;

/** The frontends of an encoded table (addon/engine/table.c layout): address, port, Maglev fields. */
function decodeTableFrontends(b: Buffer) {
  const ports = b.readUInt32LE(12);
  const addrs = b.readUInt32LE(16);
  const nfe = b.readUInt32LE(20);
  let o = 128 + ports * 32 + addrs * 4;
  const out = [];
  for (let i = 0; i < nfe; i++, o += 32) {
    out.push({
      ip: [...b.subarray(o, o + 4)].join('.'),
      port: b.readUInt16LE(o + 4),
      maglev: !!(b[o + 7]! & EngineFeFlags.MAGLEV),
      maglevStart: b.readUInt32LE(o + 24),
      maglevM: b.readUInt16LE(o + 28),
      maglevMLocal: b.readUInt16LE(o + 30),
    });
  }
  return out;
}

interface Flow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

t.test('the engine and the BPF path pick the same Maglev backend for the same packets', async (t) => {
  const node = await progrunNode(t);
  let lb: LoadBalancing = { ...DEFAULT_LOAD_BALANCING, algorithm: 'maglev' };
  const rec = new BpfReconciler(node.dp.maps, undefined, lb);
  rec.setNodeAddresses([NODE_IP]);

  const engine = createEngine({ vector: 256, sessions: 1 << 16 });
  t.teardown(() => engine.close());
  const tables: Buffer[] = [];
  const edp = new EngineDataplane(
    (blob) => {
      tables.push(blob);
      engine.setTable(blob);
    },
    { snatPorts: [40000, 49999], hairpinIp: '169.254.42.1', ctTimeoutsNs: ctTimeoutsNs(DEFAULT_CONFIG.conntrack) },
    { loadBalancing: () => lb },
  );
  edp.setPorts([{ ifindex: 2, name: 'eth0', mac: NODE_MAC, pod: false }]);
  edp.setNodeAddresses([NODE_IP]);

  const web = [be('10.244.1.11', 8080), be('10.244.1.12', 8080), be('10.244.2.13', 8080, false), be('10.244.2.14', 8080, false)];
  const mixed = [be('10.244.1.21', 80), be('10.244.1.22', 80), be('10.244.2.23', 80, false), be('10.244.2.24', 80, false)];
  const many = Array.from({ length: 300 }, (_, i) => be(`10.244.1.${1 + (i % 150)}`, 9000 + Math.floor(i / 150)));
  const services = (webBackends: Backend[]): Map<string, Frontend[]> =>
    new Map([
      [
        'test/web',
        [
          fe('LoadBalancer', LB_IP, 80, 'TCP', webBackends, { servicePort: 'test/web:http/TCP' }),
          fe('NodePort', '0.0.0.0', NODEPORT, 'TCP', webBackends, { servicePort: 'test/web:http/TCP' }),
        ],
      ],
      ['test/etp', [fe('LoadBalancer', ETP_IP, 80, 'TCP', mixed, { externalLocal: true })]],
      ['test/many', [fe('LoadBalancer', MANY_IP, 80, 'TCP', many)]],
      ['test/rnd', [{ ...fe('LoadBalancer', RANDOM_IP, 80, 'TCP', web), lbAlgorithm: 'random' as const }]],
    ]);
  const program = (all: Map<string, Frontend[]>) => {
    t.same(rec.syncAll(all).problems, [], 'BPF path programmed without problems');
    const ips = new Set([...all.values()].flat().flatMap((f) => f.clusterBackends.map((b) => b.ip)));
    edp.setNeighbours([...ips].map((ip) => ({ ip, port: 0, mac: '02:00:00:00:00:b1', snat: NODE_IP })));
    t.same(edp.syncAll(all).problems, [], 'engine programmed without problems');
    t.equal(edp.lastError, undefined, 'the engine took the table');
  };

  const bpfPick = (f: Flow): string => {
    node.dp.maps.ct.deleteMany(node.dp.maps.ct.entries().map(([k]) => k));
    const r = node.run('fromData', { src: f.src, dst: f.dst }, { proto: 'tcp', sport: f.sport, dport: f.dport, flags: TCP.SYN });
    return r.verdict === 'drop' ? 'drop' : `${r.out.dst}:${r.out.dport}`;
  };
  const enginePicks = (flows: Flow[]): string[] => {
    const out: string[] = [];
    for (let i = 0; i < flows.length; i += 256) {
      const frames = flows
        .slice(i, i + 256)
        .map((f) =>
          frame(
            { src: f.src, dst: f.dst, srcMac: '02:00:00:00:00:c1', dstMac: NODE_MAC },
            { proto: 'tcp', sport: f.sport, dport: f.dport, flags: TCP.SYN },
          ),
        );
      for (const r of engine.runVector(frames)) {
        if (r.next !== 'output') out.push(`drop (${r.reason})`);
        else {
          const p = parseFrame(r.frame);
          out.push(`${p.dst}:${p.dport}`);
        }
      }
    }
    return out;
  };
  const predict = (backends: Backend[], f: Flow): string => {
    const m = maglevTableSize(backends.length)!;
    return name(
      backends[
        maglevTable(backends.map(name), m)[maglevFlowHash({ saddr: f.src, daddr: f.dst, sport: f.sport, dport: f.dport, proto: 6 }) % m]!
      ]!,
    );
  };
  let port = 20000;
  const flowsTo = (dst: string, dport: number, n: number): Flow[] =>
    Array.from({ length: n }, (_, i) => ({ src: `192.0.2.${100 + (i % 50)}`, dst, sport: port++, dport }));

  /** Engine vs BPF over these flows; returns the engine's picks. */
  const compare = (t: Test, what: string, flows: Flow[], want?: (f: Flow) => string): string[] => {
    const eng = enginePicks(flows);
    let differ = 0;
    let wrong = 0;
    const example: string[] = [];
    flows.forEach((f, i) => {
      const b = bpfPick(f);
      if (b !== eng[i]) {
        differ++;
        if (example.length < 3) example.push(`${f.src}:${f.sport} -> ${f.dst}:${f.dport}: engine ${eng[i]}, BPF ${b}`);
      }
      if (want && eng[i] !== want(f)) wrong++;
    });
    t.equal(differ, 0, `${what}: engine and BPF agree on all ${flows.length} flows ${example.join('; ')}`);
    if (want) t.equal(wrong, 0, `${what}: every flow on the backend the agent's model predicts`);
    return eng;
  };

  program(services(web));

  t.test('the table carries the frontends Maglev uses and only those', async (t) => {
    const fes = decodeTableFrontends(tables[tables.length - 1]!);
    const byIp = new Map(fes.map((f) => [`${f.ip}:${f.port}`, f]));
    t.ok(byIp.get(`${LB_IP}:80`)!.maglev, 'LoadBalancer IP: Maglev');
    t.same(
      [byIp.get(`${LB_IP}:80`)!.maglevM, byIp.get(`${LB_IP}:80`)!.maglevMLocal],
      [maglevTableSize(4), maglevTableSize(2)],
      'sized as the BPF path sizes them',
    );
    t.equal(
      byIp.get(`${LB_IP}:80`)!.maglevStart,
      byIp.get(`0.0.0.0:${NODEPORT}`)!.maglevStart,
      'NodePort and LoadBalancer IP share the tables',
    );
    t.notOk(byIp.get(`${RANDOM_IP}:80`)!.maglev, 'annotation random: no table');
  });

  t.test('a table whose Maglev entry names no backend of its set is refused whole', async (t) => {
    const bad = Buffer.from(tables[tables.length - 1]!);
    bad.writeUInt16LE(0x7fff, bad.length - 2);
    t.throws(() => engine.setTable(bad), /Maglev (cluster|local) table entry \d+ is backend 32767 of \d+/);
    const short = Buffer.from(tables[tables.length - 1]!);
    // the first frontend (the LoadBalancer IP) points past the entries
    short.writeUInt32LE(short.readUInt32LE(84), 128 + 32 + 4 + 24);
    t.throws(() => engine.setTable(short), /Maglev tables of \d+ and \d+ entries .* inconsistent/);
    engine.setTable(tables[tables.length - 1]!);
  });

  t.test('LoadBalancer IP', async (t) => {
    compare(t, 'LoadBalancer IP', flowsTo(LB_IP, 80, 600), (f) => predict(web, f));
  });
  t.test('NodePort on the node address', async (t) => {
    compare(t, 'NodePort', flowsTo(NODE_IP, NODEPORT, 300), (f) => predict(web, f));
  });
  t.test('externalTrafficPolicy Local: the node-local table', async (t) => {
    const local = mixed.filter((b) => b.local);
    compare(t, 'eTP Local', flowsTo(ETP_IP, 80, 300), (f) => predict(local, f));
  });
  t.test('300 endpoints', async (t) => {
    compare(t, '300 endpoints', flowsTo(MANY_IP, 80, 300), (f) => predict(many, f));
  });
  t.test('random frontends stay random in the engine', async (t) => {
    // one flow, new each time: the clock jumps past its session's lifetime in between
    const seen = new Set<string>();
    const base = process.hrtime.bigint();
    for (let i = 0; i < 40; i++) {
      const [r] = engine.runVector(
        [
          frame(
            { src: '192.0.2.200', dst: RANDOM_IP, srcMac: '02:00:00:00:00:c1', dstMac: NODE_MAC },
            { proto: 'tcp', sport: 45000, dport: 80, flags: TCP.SYN },
          ),
        ],
        { nowNs: base + BigInt(i + 1) * 10_000_000_000_000n },
      );
      seen.add(parseFrame(r!.frame).dst);
    }
    t.ok(seen.size > 1, `one flow, taken afresh 40 times: ${seen.size} different backends`);
  });

  t.test('a backend leaves: both switch to the new table and still agree', async (t) => {
    const fewer = web.filter((b) => b.ip !== '10.244.1.12');
    const flows = flowsTo(LB_IP, 80, 400);
    const before = enginePicks(flows.map((f) => ({ ...f, sport: f.sport + 20000 })));
    program(services(fewer));
    const after = compare(
      t,
      'after the change',
      flows.map((f) => ({ ...f, sport: f.sport + 30000 })),
      (f) => predict(fewer, f),
    );
    t.ok(
      after.every((b) => b !== '10.244.1.12:8080'),
      'nobody goes to the removed backend',
    );
    t.ok(
      before.some((b) => b === '10.244.1.12:8080'),
      'it had flows before',
    );
  });

  t.test('a live change of the Maglev sizing rebuilds the engine tables', async (t) => {
    const n = tables.length;
    lb = { ...lb, maglev: { ...lb.maglev, entriesPerBackend: 100 } };
    rec.setLoadBalancing(lb);
    const all = services(web.filter((b) => b.ip !== '10.244.1.12'));
    rec.syncAll(all);
    edp.syncAll(all);
    t.ok(tables.length > n, 'a new table was handed over though no frontend changed');
    const fes = decodeTableFrontends(tables[tables.length - 1]!);
    t.equal(fes.find((f) => f.ip === LB_IP)!.maglevM, maglevTableSize(3, lb.maglev), 'new size');
    compare(t, 'after resizing', flowsTo(LB_IP, 80, 200));
  });
});
