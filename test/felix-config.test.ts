import t from 'tap';
import { effectiveConfig, unsupported } from '../src/config/felix.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';

t.test('Calico defaults', async (t) => {
  const r = effectiveConfig(DEFAULT_CONFIG, undefined, undefined, 'n1');
  t.same(r.config, DEFAULT_CONFIG);
  t.equal(DEFAULT_CONFIG.enabled, false);
  t.equal(DEFAULT_CONFIG.healthzPort, 10256);
  t.equal(DEFAULT_CONFIG.mapSizes.conntrack, 512000);
  t.same(DEFAULT_CONFIG.conntrack, {
    tcpSynSent: 20_000,
    tcpEstablished: 3_600_000,
    tcpFinsSeen: 30_000,
    tcpResetSeen: 40_000,
    udpTimeout: 60_000,
  });
});

t.test('node.<name> overrides default field by field', async (t) => {
  const r = effectiveConfig(
    DEFAULT_CONFIG,
    {
      bpfEnabled: true,
      bpfKubeProxyMinSyncPeriod: '2s',
      bpfConntrackTimeouts: { tcpEstablished: '2h', tcpFinsSeen: 'Auto', icmpTimeout: '5s' },
      bpfLogLevel: 'debug',
    },
    { bpfKubeProxyMinSyncPeriod: '500ms', bpfDataIfacePattern: '^ens.*' },
    'n1',
  );
  t.same(r.problems, []);
  t.match(r.config, {
    enabled: true,
    minSyncPeriodMs: 500,
    logLevel: 'Debug',
    conntrack: { tcpEstablished: 7_200_000, tcpFinsSeen: 30_000 },
  });
  t.equal(r.config!.dataIfaces.source, '^ens.*');
});

t.test('every invalid field is named; the config is refused whole', async (t) => {
  const r = effectiveConfig(
    DEFAULT_CONFIG,
    {
      bpfEnabled: 'yes',
      bpfDataIfacePattern: '([',
      bpfExternalServiceMode: 'Magic',
      bpfKubeProxyMinSyncPeriod: 'soon',
      bpfConntrackTimeouts: { tcpEstablished: '-1h', bogus: '1s' },
      bpfMapSizeConntrack: 0,
      bpfKubeProxyHealthzPort: 70000,
    },
    { bpfLogLevel: 'Loud' },
    'n1',
  );
  t.equal(r.config, undefined);
  t.same(
    r.problems.map((p) => `${p.object} ${p.field}`),
    [
      'default spec.bpfEnabled',
      'default spec.bpfDataIfacePattern',
      'default spec.bpfExternalServiceMode',
      'default spec.bpfKubeProxyMinSyncPeriod',
      'default spec.bpfConntrackTimeouts.tcpEstablished',
      'default spec.bpfConntrackTimeouts.bogus',
      'default spec.bpfMapSizeConntrack',
      'default spec.bpfKubeProxyHealthzPort',
      'node.n1 spec.bpfLogLevel',
    ],
  );
});

t.test('fields bpfproxy does not act on are reported, non-BPF Felix fields are not', async (t) => {
  const r = effectiveConfig(
    DEFAULT_CONFIG,
    { bpfPSNATPorts: '20000:29999', bpfFancyNewThing: 1, logSeverityScreen: 'Info' },
    undefined,
    'n1',
  );
  t.same(r.ignored, ['bpfPSNATPorts (not supported by bpfproxy yet)', 'bpfFancyNewThing (unknown)']);
  t.ok(r.config);
});

t.test('every external service mode is served: nothing to warn about', async (t) => {
  for (const m of ['Tunnel', 'DSR', 'SNAT'] as const) t.same(unsupported({ ...DEFAULT_CONFIG, externalServiceMode: m }), [], m);
});
