/**
 * The field table (src/config/fields.ts), every row: Calico's default as
 * Calico documents it, a good value parsed to its domain value, a bad value
 * refused with a message naming the object and field, the change class a
 * change has, and the flag of the field parsing with the same parser.
 */
import t from 'tap';
import { configChange } from '../src/config/change.js';
import type { Config } from '../src/config/config.js';
import { ConfigController } from '../src/config/controller.js';
import { effectiveConfig } from '../src/config/felix.js';
import { DEFAULT_CONFIG, FIELDS, FIELD_NAMES, type ChangeClass, type FelixField } from '../src/config/fields.js';
import { configFromFlags, parseFlag } from '../src/config/flags.js';
import { formatDuration, parseDuration } from '../src/config/duration.js';
import { captureLogger } from './helpers/log.js';

interface Row {
  /** Calico's default as written in its FelixConfiguration reference, parsed by the field's parser */
  calicoDefault: unknown;
  /** a value an operator may write, and where it lands */
  good: unknown;
  pick: (c: Config) => unknown;
  want: unknown;
  /** a value refused, and what the operator is told */
  bad: unknown;
  message: RegExp;
  change: ChangeClass;
  /** the flag that sets it, with the good value and a bad one as text */
  flag?: [flag: string, good: string, bad: string];
}

const ROWS: Record<FelixField, Row> = {
  bpfNetworkPolicy: {
    // bpfproxy's own field (Calico has none): on unless turned off
    calicoDefault: 'on',
    good: 'Off',
    pick: (c) => c.networkPolicy,
    want: 'off',
    bad: 'maybe',
    message: /^must be on or off, not "maybe"$/,
    change: 'live',
    flag: ['--network-policy', 'off', 'maybe'],
  },
  bpfEnabled: {
    calicoDefault: false,
    good: true,
    pick: (c) => c.enabled,
    want: true,
    bad: 'yes',
    message: /^must be true or false, not "yes"$/,
    change: 'live',
    flag: ['--bpf-enabled', 'true', 'yes'],
  },
  bpfDataIfacePattern: {
    calicoDefault: '^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan|bond).*)',
    good: '^ens.*',
    pick: (c) => c.dataIfaces.source,
    want: '^ens.*',
    bad: '([',
    message: /^"\(\[" is not a valid regular expression: /,
    change: 'live',
    flag: ['--data-ifaces', '^ens.*', '(['],
  },
  bpfL3IfacePattern: {
    calicoDefault: '',
    good: '^wg0$',
    pick: (c) => c.l3Ifaces?.source,
    want: '^wg0$',
    bad: 7,
    message: /^must be a regular expression string$/,
    change: 'live',
    flag: ['--l3-ifaces', '^wg0$', 'a)'],
  },
  bpfExternalServiceMode: {
    calicoDefault: 'Tunnel',
    good: 'DSR',
    pick: (c) => c.externalServiceMode,
    want: 'DSR',
    bad: 'Magic',
    message: /^must be Tunnel, DSR or SNAT, not "Magic"$/,
    change: 'live',
    flag: ['--external-service-mode', 'DSR', 'Sideways'],
  },
  bpfDSROptoutCIDRs: {
    calicoDefault: [],
    good: ['192.0.2.0/24', '198.51.100.7', '2001:DB8:0::/32', 'fd00::5'],
    pick: (c) => c.dsrOptoutCIDRs,
    want: ['192.0.2.0/24', '198.51.100.7/32', '2001:db8::/32', 'fd00::5/128'],
    bad: ['2001:db8::/129'],
    message: /^must be an IPv4 or IPv6 CIDR such as "192.0.2.0\/24" or "2001:db8::\/32", not "2001:db8::\/129"$/,
    change: 'live',
    flag: ['--dsr-optout-cidrs', '192.0.2.0/24,198.51.100.7,2001:DB8::/32,fd00::5', '10.0.0.0/40'],
  },
  bpfKubeProxyIptablesCleanupEnabled: {
    calicoDefault: true,
    good: false,
    pick: (c) => c.kubeProxyIptablesCleanup,
    want: false,
    bad: 'no',
    message: /^must be true or false/,
    change: 'live',
  },
  bpfKubeProxyMinSyncPeriod: {
    calicoDefault: '1s',
    good: '1m30s',
    pick: (c) => c.minSyncPeriodMs,
    want: 90_000,
    bad: 'soon',
    message: /^"soon" is not a duration \(examples: 20s, 1h, 1m30s\)$/,
    change: 'live',
    flag: ['--min-sync-period', '1m30s', 'soon'],
  },
  bpfConntrackTimeouts: {
    calicoDefault: {
      creationGracePeriod: '10s',
      tcpSynSent: '20s',
      tcpEstablished: '1h',
      tcpFinsSeen: 'Auto',
      tcpResetSeen: '40s',
      udpTimeout: '60s',
      genericTimeout: '10m',
      icmpTimeout: '5s',
    },
    good: { tcpEstablished: '2h', udpTimeout: '250ms' },
    pick: (c) => c.conntrack,
    want: { tcpSynSent: 20_000, tcpEstablished: 7_200_000, tcpFinsSeen: 30_000, tcpResetSeen: 40_000, udpTimeout: 250 },
    bad: { tcpResetSeen: '0s' },
    message: /^must be more than 0$/,
    change: 'reload',
    flag: ['--conntrack-timeouts', 'TCPEstablished=2h,UDPTimeout=250ms', 'TCPResetSeen=0s'],
  },
  bpfMapSizeConntrack: {
    calicoDefault: 512000,
    good: 2048,
    pick: (c) => c.mapSizes.conntrack,
    want: 2048,
    bad: 1.5,
    message: /^must be a whole number from 1 to 268435456, not 1.5$/,
    change: 'resize',
    flag: ['--map-size-conntrack', '2048', '1.5'],
  },
  bpfMapSizeNATFrontend: {
    calicoDefault: 65536,
    good: 1024,
    pick: (c) => c.mapSizes.natFrontend,
    want: 1024,
    bad: 0,
    message: /^must be a whole number from 1 to/,
    change: 'resize',
    flag: ['--map-size-nat-frontend', '1024', '0'],
  },
  bpfMapSizeNATBackend: {
    calicoDefault: 262144,
    good: 4096,
    pick: (c) => c.mapSizes.natBackend,
    want: 4096,
    bad: '4096',
    message: /^must be a whole number from 1 to 268435456, not "4096"$/,
    change: 'resize',
    flag: ['--map-size-nat-backend', '4096', 'lots'],
  },
  bpfMapSizeNATAffinity: {
    calicoDefault: 65536,
    good: 100,
    pick: (c) => c.mapSizes.natAffinity,
    want: 100,
    bad: 2 ** 29,
    message: /^must be a whole number from 1 to 268435456/,
    change: 'resize',
    flag: ['--map-size-nat-affinity', '100', '536870912'],
  },
  bpfMaglevMaxEndpointsPerService: {
    calicoDefault: 100,
    good: 10,
    pick: (c) => c.maglevMaxEndpointsPerService,
    want: 10,
    bad: 0,
    message: /^must be a whole number from 1 to 65521, not 0/,
    change: 'live',
    flag: ['--maglev-max-endpoints-per-service', '10', '0'],
  },
  bpfConnectTimeLoadBalancing: {
    calicoDefault: 'TCP',
    good: 'Enabled',
    pick: (c) => c.connectTimeLb,
    want: 'Enabled',
    bad: 'UDP',
    message: /^must be .*TCP.*, not "UDP"$/,
    change: 'reload',
    flag: ['--connect-time-lb', 'Enabled', 'udp'],
  },
  bpfLogLevel: {
    calicoDefault: 'Off',
    good: 'debug',
    pick: (c) => c.logLevel,
    want: 'Debug',
    bad: 'Loud',
    message: /^must be Off, Info or Debug, not "Loud"$/,
    change: 'live',
  },
  bpfXDPAcceleration: {
    calicoDefault: 'Off', // bpfproxy's own field (Calico has none): our default
    good: 'native',
    pick: (c) => c.xdpAcceleration,
    want: 'Native',
    bad: 'fast',
    message: /^must be Off, Native or Generic, not "fast"$/,
    change: 'live',
    flag: ['--xdp-acceleration', 'native', 'turbo'],
  },
  bpfKubeProxyHealthzPort: {
    calicoDefault: 10256,
    good: 10257,
    pick: (c) => c.healthzPort,
    want: 10257,
    bad: 70000,
    message: /^must be a port number from 1 to 65535, not 70000$/,
    change: 'live',
  },
};

t.test('every field of the table has a row here', async (t) => {
  t.same(Object.keys(ROWS).sort(), [...FIELD_NAMES].sort());
});

for (const name of FIELD_NAMES) {
  const row = ROWS[name];
  t.test(name, async (t) => {
    await t.test("default: Calico's, as Calico writes it", async (t) => {
      const r = effectiveConfig(DEFAULT_CONFIG, { [name]: row.calicoDefault }, undefined, 'n1');
      t.same(r.problems, []);
      t.ok(configChange(DEFAULT_CONFIG, r.config!).class === 'nothing', 'the written default is the default in force');
    });

    await t.test('a good value lands in Config in domain units', async (t) => {
      const r = effectiveConfig(DEFAULT_CONFIG, { [name]: row.good }, undefined, 'n1');
      t.same(r.problems, []);
      t.same(row.pick(r.config!), row.want);
      t.notSame(row.pick(DEFAULT_CONFIG), row.want, 'differs from the default');
    });

    await t.test('a bad value is refused, naming object and field', async (t) => {
      const r = effectiveConfig(DEFAULT_CONFIG, undefined, { [name]: row.bad }, 'n1');
      t.equal(r.config, undefined, 'the config is refused whole');
      t.equal(r.problems.length, 1);
      const p = r.problems[0]!;
      t.equal(p.object, 'node.n1');
      t.match(p.field, new RegExp(`^spec\\.${name}(\\.|$)`));
      t.match(p.message, row.message);

      const { log, lines } = captureLogger();
      const ctl = new ConfigController(DEFAULT_CONFIG, 'n1', log, () => {});
      ctl.apply('node.n1', { spec: { [name]: row.bad } });
      t.equal(ctl.evaluate(), undefined);
      t.equal(ctl.config, DEFAULT_CONFIG, 'the last good config stays');
      t.match(
        lines.find((l) => l.level === 'error')?.msg,
        new RegExp(
          `^FelixConfiguration node\\.n1 field spec\\.${name}.*: .*; the configuration is refused and the last good one stays in force$`,
        ),
      );
    });

    await t.test(`a change is ${row.change}`, async (t) => {
      const r = effectiveConfig(DEFAULT_CONFIG, { [name]: row.good }, undefined, 'n1');
      const ch = configChange(DEFAULT_CONFIG, r.config!);
      t.equal(ch.class, row.change);
      t.same(ch[row.change], [name], 'and only this field changed');
      t.equal(FIELDS[name].change, row.change);
    });

    if (row.flag) {
      const [flag, text, badText] = row.flag;
      await t.test(`${flag} parses with the field's parser`, async (t) => {
        const c = configFromFlags({ [name]: parseFlag(name, flag, text) });
        t.same(row.pick(c), row.want);
        t.throws(() => parseFlag(name, flag, badText), new RegExp(`^${flag}( \\w+)?: `), 'the error names the flag');
      });
    }
  });
}

t.test('bpfConntrackTimeouts: default <- node.<name> key by key; Auto and null keep the value in force', async (t) => {
  const r = effectiveConfig(
    DEFAULT_CONFIG,
    { bpfConntrackTimeouts: { tcpEstablished: '2h', tcpSynSent: '5s' } },
    { bpfConntrackTimeouts: { tcpSynSent: 'Auto', udpTimeout: '30s', tcpResetSeen: null, icmpTimeout: '1s' } },
    'n1',
  );
  t.same(r.config!.conntrack, {
    tcpSynSent: 5_000,
    tcpEstablished: 7_200_000,
    tcpFinsSeen: 30_000,
    tcpResetSeen: 40_000,
    udpTimeout: 30_000,
  });
});

t.test('bpfConntrackTimeouts: every bad key is named', async (t) => {
  const r = effectiveConfig(
    DEFAULT_CONFIG,
    { bpfConntrackTimeouts: { tcpEstablished: '-1h', bogus: '1s', udpTimeout: 0 } },
    undefined,
    'n1',
  );
  t.same(
    r.problems.map((p) => `${p.field}: ${p.message}`),
    [
      'spec.bpfConntrackTimeouts.tcpEstablished: "-1h" is not a duration (examples: 20s, 1h, 1m30s)',
      'spec.bpfConntrackTimeouts.bogus: unknown timeout (known: creationGracePeriod, tcpSynSent, tcpEstablished, tcpFinsSeen, tcpResetSeen, udpTimeout, genericTimeout, icmpTimeout)',
      'spec.bpfConntrackTimeouts.udpTimeout: must be more than 0',
    ],
  );
  const list = effectiveConfig(DEFAULT_CONFIG, { bpfConntrackTimeouts: ['1h'] }, undefined, 'n1');
  t.match(list.problems[0]!.message, 'must be an object such as {tcpEstablished: 1h}');
});

t.test('--conntrack-timeouts takes Felix env spelling and the CRD keys, any case', async (t) => {
  t.same(parseFlag('bpfConntrackTimeouts', '--conntrack-timeouts', 'tcpestablished=2h, UDPTimeout=1m ,TCPFinsSeen=Auto'), {
    ...DEFAULT_CONFIG.conntrack,
    tcpEstablished: 7_200_000,
    udpTimeout: 60_000,
  });
  t.same(parseFlag('bpfConntrackTimeouts', '--conntrack-timeouts', ''), DEFAULT_CONFIG.conntrack);
  t.throws(() => parseFlag('bpfConntrackTimeouts', '--conntrack-timeouts', 'TCPEstablished'), {
    message: '--conntrack-timeouts: "TCPEstablished" is not Key=duration (e.g. TCPEstablished=1h)',
  });
});

t.test('one duration parser: the flag and the field agree', async (t) => {
  for (const [text, ms] of [
    ['20s', 20_000],
    ['1h', 3_600_000],
    ['1m30s', 90_000],
    ['250ms', 250],
    ['1.1s', 1100],
    ['2', 2000],
  ] as const) {
    t.equal(parseDuration(text), ms, text);
    t.equal(parseFlag('bpfKubeProxyMinSyncPeriod', '--min-sync-period', text), ms, `--min-sync-period ${text}`);
    t.equal(effectiveConfig(DEFAULT_CONFIG, { bpfKubeProxyMinSyncPeriod: text }, undefined, 'n').config!.minSyncPeriodMs, ms);
  }
  for (const bad of ['', '1d', 's', '1s2', '-1s']) t.throws(() => parseDuration(bad), /is not a duration/, JSON.stringify(bad));
  t.equal(formatDuration(90_000), '90s');
  t.equal(formatDuration(3_600_000), '1h');
  t.equal(formatDuration(250), '250ms');
});

t.test('defaults <- flags: the base the FelixConfiguration overlays', async (t) => {
  const base = configFromFlags({ bpfEnabled: true, bpfKubeProxyHealthzPort: undefined, bpfMapSizeConntrack: 4096 });
  t.equal(base.enabled, true);
  t.equal(base.healthzPort, 10256, 'undefined: the default');
  t.same(base.mapSizes, { ...DEFAULT_CONFIG.mapSizes, conntrack: 4096 });
  t.equal(DEFAULT_CONFIG.mapSizes.conntrack, 512000, 'the defaults are not changed');
  const r = effectiveConfig(base, { bpfMapSizeNATBackend: 8192 }, undefined, 'n');
  t.same(r.config!.mapSizes, { ...DEFAULT_CONFIG.mapSizes, conntrack: 4096, natBackend: 8192 }, 'the flag stays under the object');
});

t.test('DEFAULT_CONFIG: every Config key set, frozen', async (t) => {
  for (const [k, v] of Object.entries(DEFAULT_CONFIG)) t.not(v, undefined, k);
  // every key of Config, so a new one is seen here (its FIELDS row sets it)
  const keys: ReadonlyArray<keyof Config> = [
    'enabled',
    'dataIfaces',
    'l3Ifaces',
    'externalServiceMode',
    'dsrOptoutCIDRs',
    'kubeProxyIptablesCleanup',
    'minSyncPeriodMs',
    'conntrack',
    'mapSizes',
    'logLevel',
    'maglevMaxEndpointsPerService',
    'xdpAcceleration',
    'connectTimeLb',
    'healthzPort',
    'networkPolicy',
  ];
  t.same(Object.keys(DEFAULT_CONFIG).sort(), [...keys].sort());
  t.ok(Object.isFrozen(DEFAULT_CONFIG) && Object.isFrozen(DEFAULT_CONFIG.conntrack) && Object.isFrozen(DEFAULT_CONFIG.mapSizes));
});

t.test('change classification: the most a change takes, every field named', async (t) => {
  const c = (spec: Record<string, unknown>) => effectiveConfig(DEFAULT_CONFIG, spec, undefined, 'n').config!;
  t.same(configChange(DEFAULT_CONFIG, c({})), { class: 'nothing', live: [], reload: [], resize: [] });
  t.same(configChange(DEFAULT_CONFIG, c({ bpfKubeProxyMinSyncPeriod: '1000ms', bpfConntrackTimeouts: { udpTimeout: '1m' } })), {
    class: 'nothing',
    live: [],
    reload: [],
    resize: [],
  });
  t.same(configChange(DEFAULT_CONFIG, c({ bpfLogLevel: 'Debug', bpfConntrackTimeouts: { udpTimeout: '2m' }, bpfMapSizeConntrack: 10 })), {
    class: 'resize',
    live: ['bpfLogLevel'],
    reload: ['bpfConntrackTimeouts'],
    resize: ['bpfMapSizeConntrack'],
  });
});

t.test('the controller reports a change only when one happened', async (t) => {
  const { log } = captureLogger();
  const ctl = new ConfigController(DEFAULT_CONFIG, 'n1', log, () => {});
  ctl.apply('default', { spec: { bpfEnabled: true } });
  t.equal(ctl.evaluate()?.enabled, true);
  ctl.apply('default', { spec: { bpfEnabled: true, bpfKubeProxyMinSyncPeriod: '1000ms', bpfPSNATPorts: '1:2' } });
  t.equal(ctl.evaluate(), undefined, 'the same values written another way, or an ignored field: no change');
  ctl.apply('node.n1', { spec: { bpfDataIfacePattern: '^ens3$' } });
  t.equal(ctl.evaluate()?.dataIfaces.source, '^ens3$', 'a pattern change is one (a RegExp is {} to JSON.stringify)');
  ctl.apply('node.n1', undefined);
  t.equal(ctl.evaluate()?.dataIfaces.source, DEFAULT_CONFIG.dataIfaces.source, 'override deleted: the default again');
});
