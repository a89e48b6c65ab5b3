/**
 * The benchmark's kube-proxy rules are kube-proxy's: chain names, the exact
 * iptables-restore input of its full and partial syncs (re-expressed from
 * kube-proxy's own TestSyncProxyRulesRepeated, pkg/proxy/iptables/proxier_test.go),
 * when it does which (its defaults), and they load into real iptables and nft.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import {
  IPTABLES_RESTORE_ARGS,
  JUMP_CHAINS,
  KUBE_PROXY_DEFAULTS,
  KubeProxySchedule,
  iptablesRestoreInput,
  iptablesRules,
  natChainsFromSave,
  nftEndpointChange,
  nftEpChain,
  nftRules,
  nftSvcChain,
  sepChain,
  serviceKey,
  svcChain,
  type BenchService,
} from '../bench/kube-proxy-rules.js';
import { KubeProxyIptables } from '../bench/kube-proxy-iptables.js';
import { IptablesTimeout, KubeProxyTables } from '../testkit/kube-proxy/iptables.js';
import { nsPath } from '../testkit/netns.js';
import { tmpNetns } from './helpers/env.js';

const svc1: BenchService = {
  namespace: 'ns1',
  name: 'svc1',
  portName: 'p80',
  clusterIP: '172.30.0.41',
  port: 80,
  protocol: 'TCP',
  endpoints: [{ ip: '10.180.0.1', port: 80 }],
};

t.test("chain names are kube-proxy's (values from kube-proxy's own tests)", async (t) => {
  t.equal(svcChain(svc1), 'KUBE-SVC-XPGD46QRK7WJZT7O');
  t.equal(nftSvcChain(svc1), 'service-ULMVA6XW-ns1/svc1/tcp/p80');
  t.equal(nftEpChain(svc1, svc1.endpoints[0]!), 'endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80');
  t.match(sepChain(svc1, svc1.endpoints[0]!), /^KUBE-SEP-[A-Z2-7]{16}$/);
});

/**
 * An iptables-restore input as kube-proxy's assertIPTablesRulesEqual compares
 * them: per table, the declared chains as a set, each chain's rules in order,
 * the deleted chains as a set; every table ends in COMMIT.
 */
function canon(
  input: string,
): Record<string, { chains: string[]; rules: Record<string, string[]>; deleted: string[]; committed: boolean }> {
  const out: ReturnType<typeof canon> = {};
  let cur: ReturnType<typeof canon>[string] | undefined;
  for (const line of input
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)) {
    if (line.startsWith('*')) out[line.slice(1)] = cur = { chains: [], rules: {}, deleted: [], committed: false };
    else if (!cur) throw new Error(`line outside a table: ${line}`);
    else if (line === 'COMMIT') cur.committed = true;
    else if (line.startsWith(':')) cur.chains.push(line.slice(1).split(' ')[0]!);
    else if (line.startsWith('-X ')) cur.deleted.push(line.slice(3));
    else if (line.startsWith('-A ')) (cur.rules[line.split(' ')[1]!] ??= []).push(line);
    else throw new Error(`unexpected line: ${line}`);
  }
  for (const x of Object.values(out)) {
    x.chains.sort();
    x.deleted.sort();
  }
  return out;
}

const FILTER = `*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
`;
const NAT_TOP = `*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
`;
const NODEPORTS_LAST =
  '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS';
const expected = (filterRules: string[], nat: string[]): string =>
  `${FILTER.replace('COMMIT\n', `${filterRules.map((l) => `${l}\n`).join('')}COMMIT\n`)}${NAT_TOP}${nat.map((l) => `${l}\n`).join('')}${NODEPORTS_LAST}\nCOMMIT\n`;

const svcRule = (n: string, ip: string, port: number, chain: string) =>
  `-A KUBE-SERVICES -m comment --comment "${n} cluster IP" -m tcp -p tcp -d ${ip} --dport ${port} -j ${chain}`;
const masqRule = (chain: string, n: string, ip: string, port: number) =>
  `-A ${chain} -m comment --comment "${n} cluster IP" -m tcp -p tcp -d ${ip} --dport ${port} ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ`;
const sepRules = (sep: string, n: string, ep: string) => [
  `-A ${sep} -m comment --comment ${n} -s ${ep.split(':')[0]} -j KUBE-MARK-MASQ`,
  `-A ${sep} -m comment --comment ${n} -m tcp -p tcp -j DNAT --to-destination ${ep}`,
];

const mk = (ns: string, name: string, port: number, ip: string, eps: string[]): BenchService => ({
  namespace: ns,
  name,
  portName: `p${port}`,
  clusterIP: ip,
  port,
  protocol: 'TCP',
  endpoints: eps.map((e) => ({ ip: e.split(':')[0]!, port: Number(e.split(':')[1]) })),
});

t.test("restore input of full and partial syncs, as kube-proxy's TestSyncProxyRulesRepeated expects", async (t) => {
  // kube-proxy's test proxier: clusterCIDR 10.0.0.0/8, iptables without --random-fully
  let existing = new Set<string>();
  let services: BenchService[] = [];
  /** One sync in non-large mode: iptables-save first (every sync cleans up), then the restore; the nat table afterwards. */
  const sync = (full: boolean, changed: string[]): string => {
    const r = iptablesRestoreInput(services, {
      clusterCidr: '10.0.0.0/8',
      full,
      changed: new Set(changed),
      existingNatChains: existing,
      randomFully: false,
    });
    t.equal(r.largeClusterMode, false);
    const c = canon(r.input).nat!;
    existing = new Set([...existing, ...c.chains].filter((x) => !c.deleted.includes(x)));
    return r.input;
  };
  const same = (got: string, want: string, msg: string) => {
    const g = canon(got);
    t.ok(g.filter?.committed && g.nat?.committed, `${msg}: both tables end in COMMIT`);
    t.same(g, canon(want), msg);
  };
  const s1 = '"ns1/svc1:p80 -> 10.0.1.1:80"';
  services = [mk('ns1', 'svc1', 80, '172.30.0.41', ['10.0.1.1:80']), mk('ns2', 'svc2', 8080, '172.30.0.42', ['10.0.2.1:8080'])];
  same(
    sync(true, []),
    expected(
      [],
      [
        ':KUBE-SEP-SNQ3ZNILQDEJNDQO - [0:0]',
        ':KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]',
        ':KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]',
        ':KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]',
        svcRule('ns1/svc1:p80', '172.30.0.41', 80, 'KUBE-SVC-XPGD46QRK7WJZT7O'),
        svcRule('ns2/svc2:p8080', '172.30.0.42', 8080, 'KUBE-SVC-2VJB64SDSIJUP5T6'),
        ...sepRules('KUBE-SEP-SNQ3ZNILQDEJNDQO', 'ns1/svc1:p80', '10.0.1.1:80'),
        ...sepRules('KUBE-SEP-UHEGFW77JX3KXTOV', 'ns2/svc2:p8080', '10.0.2.1:8080'),
        masqRule('KUBE-SVC-2VJB64SDSIJUP5T6', 'ns2/svc2:p8080', '172.30.0.42', 8080),
        '-A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 -> 10.0.2.1:8080" -j KUBE-SEP-UHEGFW77JX3KXTOV',
        masqRule('KUBE-SVC-XPGD46QRK7WJZT7O', 'ns1/svc1:p80', '172.30.0.41', 80),
        `-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment ${s1} -j KUBE-SEP-SNQ3ZNILQDEJNDQO`,
      ],
    ),
    'first sync: every chain',
  );

  const svc3rules = (eps: string[]) =>
    [
      svcRule('ns3/svc3:p80', '172.30.0.43', 80, 'KUBE-SVC-X27LE4BHSL4DOUIK'),
      masqRule('KUBE-SVC-X27LE4BHSL4DOUIK', 'ns3/svc3:p80', '172.30.0.43', 80),
    ].concat(eps);
  services.push(mk('ns3', 'svc3', 80, '172.30.0.43', ['10.0.3.1:80']));
  same(
    sync(false, ['ns3/svc3']),
    expected(
      [],
      [
        ':KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]',
        ':KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]',
        svcRule('ns1/svc1:p80', '172.30.0.41', 80, 'KUBE-SVC-XPGD46QRK7WJZT7O'),
        svcRule('ns2/svc2:p8080', '172.30.0.42', 8080, 'KUBE-SVC-2VJB64SDSIJUP5T6'),
        ...svc3rules(['-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.1:80" -j KUBE-SEP-BSWRHOQ77KEXZLNL']),
        ...sepRules('KUBE-SEP-BSWRHOQ77KEXZLNL', 'ns3/svc3:p80', '10.0.3.1:80'),
      ],
    ),
    'a new service: only its chains, KUBE-SERVICES whole',
  );

  services = services.filter((s) => s.name !== 'svc2');
  same(
    sync(false, ['ns2/svc2']),
    expected(
      [],
      [
        ':KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]',
        ':KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]',
        svcRule('ns1/svc1:p80', '172.30.0.41', 80, 'KUBE-SVC-XPGD46QRK7WJZT7O'),
        svcRule('ns3/svc3:p80', '172.30.0.43', 80, 'KUBE-SVC-X27LE4BHSL4DOUIK'),
        '-X KUBE-SEP-UHEGFW77JX3KXTOV',
        '-X KUBE-SVC-2VJB64SDSIJUP5T6',
      ],
    ),
    "a deleted service: its chains flushed and deleted, no other service's written",
  );

  services.push(mk('ns4', 'svc4', 80, '172.30.0.44', []));
  same(
    sync(false, ['ns4/svc4']),
    expected(
      ['-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j REJECT'],
      [
        svcRule('ns1/svc1:p80', '172.30.0.41', 80, 'KUBE-SVC-XPGD46QRK7WJZT7O'),
        svcRule('ns3/svc3:p80', '172.30.0.43', 80, 'KUBE-SVC-X27LE4BHSL4DOUIK'),
      ],
    ),
    'a service without endpoints: a REJECT in the filter table, no nat chains',
  );

  services = services.map((s) => (s.name === 'svc4' ? mk('ns4', 'svc4', 80, '172.30.0.44', ['10.0.4.1:80']) : s));
  const svc123 = [
    svcRule('ns1/svc1:p80', '172.30.0.41', 80, 'KUBE-SVC-XPGD46QRK7WJZT7O'),
    svcRule('ns3/svc3:p80', '172.30.0.43', 80, 'KUBE-SVC-X27LE4BHSL4DOUIK'),
    svcRule('ns4/svc4:p80', '172.30.0.44', 80, 'KUBE-SVC-4SW47YFZTEDKD3PK'),
  ];
  same(
    sync(false, ['ns4/svc4']),
    expected(
      [],
      [
        ':KUBE-SEP-AYCN5HPXMIRJNJXU - [0:0]',
        ':KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]',
        ...svc123,
        ...sepRules('KUBE-SEP-AYCN5HPXMIRJNJXU', 'ns4/svc4:p80', '10.0.4.1:80'),
        masqRule('KUBE-SVC-4SW47YFZTEDKD3PK', 'ns4/svc4:p80', '172.30.0.44', 80),
        '-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.0.4.1:80" -j KUBE-SEP-AYCN5HPXMIRJNJXU',
      ],
    ),
    'its endpoints arrive: its chains written',
  );

  services = services.map((s) => (s.name === 'svc3' ? mk('ns3', 'svc3', 80, '172.30.0.43', ['10.0.3.2:80']) : s));
  same(
    sync(false, ['ns3/svc3']),
    expected(
      [],
      [
        ':KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]',
        ':KUBE-SEP-DKCFIS26GWF2WLWC - [0:0]',
        ':KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]',
        ...svc123,
        ...sepRules('KUBE-SEP-DKCFIS26GWF2WLWC', 'ns3/svc3:p80', '10.0.3.2:80'),
        masqRule('KUBE-SVC-X27LE4BHSL4DOUIK', 'ns3/svc3:p80', '172.30.0.43', 80),
        '-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.2:80" -j KUBE-SEP-DKCFIS26GWF2WLWC',
        '-X KUBE-SEP-BSWRHOQ77KEXZLNL',
      ],
    ),
    "an endpoint changes: the service's SVC and SEP chains rewritten, the old SEP deleted",
  );

  services = services.map((s) => (s.name === 'svc3' ? mk('ns3', 'svc3', 80, '172.30.0.43', ['10.0.3.2:80', '10.0.3.3:80']) : s));
  same(
    sync(false, ['ns3/svc3']),
    expected(
      [],
      [
        ':KUBE-SEP-DKCFIS26GWF2WLWC - [0:0]',
        ':KUBE-SEP-JVVZVJ7BSEPPRNBS - [0:0]',
        ':KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]',
        ...svc123,
        ...sepRules('KUBE-SEP-DKCFIS26GWF2WLWC', 'ns3/svc3:p80', '10.0.3.2:80'),
        ...sepRules('KUBE-SEP-JVVZVJ7BSEPPRNBS', 'ns3/svc3:p80', '10.0.3.3:80'),
        masqRule('KUBE-SVC-X27LE4BHSL4DOUIK', 'ns3/svc3:p80', '172.30.0.43', 80),
        '-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.2:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-DKCFIS26GWF2WLWC',
        '-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.3:80" -j KUBE-SEP-JVVZVJ7BSEPPRNBS',
      ],
    ),
    'an endpoint added: statistic probability with ten decimals',
  );

  same(sync(false, []), expected([], svc123), 'nothing changed: no service chains, KUBE-SERVICES still whole');
  t.same(
    IPTABLES_RESTORE_ARGS.filter((a) => a.startsWith('--')),
    ['--noflush', '--counters'],
    'fed to iptables-restore --noflush --counters',
  );
});

t.test('large cluster mode (over 1000 endpoints): no per-endpoint comments, service rules keep theirs', async (t) => {
  const big: BenchService[] = [
    { ...svc1, endpoints: Array.from({ length: 1001 }, (_, i) => ({ ip: `10.180.${i >> 8}.${i & 255}`, port: 80 })) },
  ];
  const r = iptablesRestoreInput(big, { clusterCidr: '10.0.0.0/8', full: true });
  t.equal(r.largeClusterMode, true);
  const nat = canon(r.input).nat!;
  const svc = nat.rules['KUBE-SVC-XPGD46QRK7WJZT7O']!;
  t.match(svc[0], /--comment "ns1\/svc1:p80 cluster IP"/, 'the masquerade rule keeps its comment');
  t.equal(
    svc[1],
    `-A KUBE-SVC-XPGD46QRK7WJZT7O -m statistic --mode random --probability 0.0009990010 -j ${sepChain(big[0]!, big[0]!.endpoints[0]!)}`,
  );
  const sep = nat.rules[sepChain(big[0]!, big[0]!.endpoints[0]!)]!;
  t.same(sep, [
    `-A ${sepChain(big[0]!, big[0]!.endpoints[0]!)} -s 10.180.0.0 -j KUBE-MARK-MASQ`,
    `-A ${sepChain(big[0]!, big[0]!.endpoints[0]!)} -m tcp -p tcp -j DNAT --to-destination 10.180.0.0:80`,
  ]);
  t.match(nat.rules['KUBE-SERVICES']![0], /--comment "ns1\/svc1:p80 cluster IP"/);
  t.equal(
    iptablesRestoreInput(
      big.map((s) => ({ ...s, endpoints: s.endpoints.slice(0, 1000) })),
      { clusterCidr: '10.0.0.0/8', full: true },
    ).largeClusterMode,
    false,
    '1000 is not large',
  );
});

t.test('when kube-proxy does what, at its defaults', async (t) => {
  const d = KUBE_PROXY_DEFAULTS;
  t.same([d.syncPeriodMs, d.minSyncPeriodMs, d.fullSyncPeriodMs, d.largeClusterEndpointsThreshold], [30_000, 1_000, 3_600_000, 1000]);

  const small = new KubeProxySchedule();
  let p = small.plan(0, 10);
  t.same(
    p,
    { kind: 'full', cleanup: true, largeClusterMode: false, ensureJumps: true },
    'first sync: full, jumps ensured, stale chains looked for',
  );
  small.done(0, p);
  p = small.plan(1000, 10);
  t.same(p, { kind: 'partial', cleanup: true, largeClusterMode: false, ensureJumps: false }, 'then partial, cleaning up every sync');
  small.done(1000, p);
  t.equal(small.nextPeriodicSync(), 1000 + 3_600_000, 'the runner fires an hour after the last sync');
  t.equal(small.plan(3_600_001, 10).kind, 'full', 'over an hour since the last full sync: full');
  small.failed();
  t.equal(small.plan(2000, 10).kind, 'full', 'after a failed restore: full');

  const large = new KubeProxySchedule();
  p = large.plan(0, 1001);
  t.same(p, { kind: 'full', cleanup: true, largeClusterMode: true, ensureJumps: true });
  large.done(0, p);
  t.same(
    large.plan(10_000, 1001),
    { kind: 'partial', cleanup: false, largeClusterMode: true, ensureJumps: false },
    'large: no cleanup within syncPeriod',
  );
  large.done(10_000, large.plan(10_000, 1001));
  t.equal(large.plan(30_001, 1001).cleanup, true, 'large: cleanup once syncPeriod has passed');
  t.equal(large.plan(7_200_000, 1001).kind, 'partial', 'large: no periodic full sync (kubernetes#138571)');

  const c = new KubeProxySchedule();
  t.equal(c.canaryChecksDue(0), 0, 'the monitor starts');
  t.equal(c.canaryChecksDue(29_999), 0);
  t.equal(c.canaryChecksDue(95_000), 3, 'one canary check per syncPeriod');
  t.equal(c.canaryChecksDue(120_000), 1);
});

const inNs = (ns: string, cmd: string, args: readonly string[], input = '') =>
  spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', cmd, ...args], { input, encoding: 'utf8' });

t.test("full then partial restores apply to real iptables as kube-proxy's do", async (t) => {
  const ns = tmpNetns(t);
  let svcs: BenchService[] = [
    svc1,
    { ...svc1, name: 'svc2', clusterIP: '172.30.0.42', endpoints: [1, 2, 3].map((i) => ({ ip: `10.180.0.${i}`, port: 80 })) },
  ];
  const first = iptablesRules(svcs, '10.0.0.0/8');
  t.match(first, /-m statistic --mode random --probability 0\.3333333333 -j KUBE-SEP-/);
  t.match(first, /-m statistic --mode random --probability 0\.5000000000 -j KUBE-SEP-/);
  let r = inNs(ns, 'iptables-restore', IPTABLES_RESTORE_ARGS, first);
  t.equal(r.status, 0, `iptables-restore --noflush accepts the first sync ${r.stderr}`);
  const oldSep = sepChain(svcs[1]!, svcs[1]!.endpoints[2]!);
  svcs = [
    svcs[0]!,
    {
      ...svcs[1]!,
      endpoints: [
        { ip: '10.180.0.1', port: 80 },
        { ip: '10.180.0.9', port: 80 },
      ],
    },
  ];
  const existing = natChainsFromSave(inNs(ns, 'iptables-save', ['-t', 'nat']).stdout);
  t.ok(existing.has(oldSep), 'iptables-save lists the chains');
  const part = iptablesRestoreInput(svcs, {
    clusterCidr: '10.0.0.0/8',
    full: false,
    changed: new Set([serviceKey(svcs[1]!)]),
    existingNatChains: existing,
  });
  t.notMatch(part.input, new RegExp(`:${svcChain(svc1)} `), 'the unchanged service is not written');
  t.same(part.deletedChains, [oldSep, sepChain(svcs[1]!, { ip: '10.180.0.2', port: 80 })].sort());
  r = inNs(ns, 'iptables-restore', IPTABLES_RESTORE_ARGS, part.input);
  t.equal(r.status, 0, `iptables-restore --noflush accepts the partial sync ${r.stderr}`);
  const nat = inNs(ns, 'iptables-save', ['-t', 'nat']).stdout;
  t.match(nat, /--to-destination 10\.180\.0\.9:80/);
  t.notMatch(nat, new RegExp(oldSep), 'the stale endpoint chain is gone');
  t.match(nat, /--to-destination 10\.180\.0\.1:80/, 'the unchanged service kept its rules');
  t.equal(nat.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ')).length, 3, 'KUBE-SERVICES rewritten, not appended to');
});

t.test('the kube-proxy runner: monitor, jumps, syncs on the schedule, idle cost', async (t) => {
  const ns = tmpNetns(t);
  const svcs: BenchService[] = [svc1, { ...svc1, name: 'svc2', clusterIP: '172.30.0.42' }];
  const kp = new KubeProxyIptables(ns, svcs, '10.0.0.0/8');
  const first = kp.start();
  t.match(first, { kind: 'full', ensureJumps: true, cleanup: true, changed: 2 });
  for (const j of JUMP_CHAINS) {
    t.equal(inNs(ns, 'iptables', ['-t', j.table, '-C', j.from, ...j.args]).status, 0, `jump ${j.from} -> ${j.chain} (${j.table}) in place`);
  }
  t.equal(inNs(ns, 'iptables', ['-t', 'mangle', '-S', 'KUBE-PROXY-CANARY']).status, 0, 'canary chain created');
  const c = kp.change({ ...svcs[1]!, endpoints: [{ ip: '10.180.0.7', port: 80 }] }, 40_000);
  t.match(c, { at: 40_000, kind: 'partial', ensureJumps: false, cleanup: true, changed: 1, deletedChains: 1 });
  t.match(inNs(ns, 'iptables-save', ['-t', 'nat']).stdout, /10\.180\.0\.7:80/);
  const f = kp.idle();
  t.match(f.periodicSync, { at: 40_000 + 3_600_000, kind: 'full', changed: 2 }, 'an hour later, with nothing changed: a full sync');
  t.equal(f.syncs.length, 2);
  t.equal(f.largeClusterMode, false);
  t.ok(f.canary.wallMs > 0 && f.canary.everyMs === 30_000);
  t.ok(f.idleCpuSecPerSec >= 0 && f.idleCpuSecPerSec < 0.05, `idle CPU ${f.idleCpuSecPerSec} s/s`);
});

t.test('an iptables command past its time limit is killed, named, and changes nothing', async (t) => {
  const ns = tmpNetns(t);
  // 3000 service ports: a --noflush restore of their first sync takes about a second (iptables-nft 1.8.9)
  const svcs: BenchService[] = Array.from({ length: 3000 }, (_, i) => ({
    ...svc1,
    name: `svc${i}`,
    clusterIP: `172.30.${i >> 8}.${i & 255}`,
    endpoints: [{ ip: `10.180.${i >> 8}.${i & 255}`, port: 80 }],
  }));
  const input = iptablesRules(svcs, '10.0.0.0/8');
  const limited = new KubeProxyTables(ns, 'test kube-proxy', 100);
  const err = (() => {
    try {
      limited.restore(input);
      return null;
    } catch (e) {
      return e;
    }
  })();
  t.ok(err instanceof IptablesTimeout, `the restore is killed at 100 ms (${String(err)})`);
  t.match(
    String(err),
    /test kube-proxy: iptables-restore .*--noflush.* did not finish in 0\.1 s and was killed; nothing it was writing was applied/,
  );
  t.notMatch(inNs(ns, 'iptables-save', ['-t', 'nat']).stdout, /KUBE-SVC-/, 'nothing of the killed restore is in the nat table');
  t.equal(inNs(ns, 'iptables-restore', IPTABLES_RESTORE_ARGS, input).status, 0, 'without a limit the same restore applies');
  t.throws(
    () => new KubeProxyIptables(ns, svcs, '10.0.0.0/8', 100).start(),
    IptablesTimeout,
    "the benchmark's kube-proxy passes its limit on",
  );
});

t.test('nft rules load into real nft; the incremental change applies', async (t) => {
  const ns = tmpNetns(t);
  const svcs: BenchService[] = [
    svc1,
    { ...svc1, name: 'svc2', clusterIP: '172.30.0.42', endpoints: [1, 2, 3].map((i) => ({ ip: `10.180.0.${i}`, port: 80 })) },
  ];
  t.equal(inNs(ns, 'nft', ['-f', '-'], nftRules(svcs, '10.0.0.0/8')).status, 0, 'nft accepts the full transaction');
  const after = {
    ...svcs[1]!,
    endpoints: [
      { ip: '10.180.0.1', port: 80 },
      { ip: '10.180.0.9', port: 80 },
    ],
  };
  const r = inNs(ns, 'nft', ['-f', '-'], nftEndpointChange(svcs[1]!, after, '10.0.0.0/8'));
  t.equal(r.status, 0, `nft accepts the incremental change ${r.stderr}`);
  const list = inNs(ns, 'nft', ['list', 'table', 'ip', 'kube-proxy']).stdout;
  t.match(list, /10\.180\.0\.9\/80/);
  t.notMatch(list, /10\.180\.0\.3\/80/, 'removed endpoint chain deleted');
});
