import t from 'tap';
import { CALICO_DEFAULTS, effectiveConfig, unsupported } from '../src/config/felix.js';

t.test('Calico defaults', async (t) => {
  const r = effectiveConfig(CALICO_DEFAULTS, undefined, undefined, 'n1');
  t.same(r.config, CALICO_DEFAULTS);
  t.equal(CALICO_DEFAULTS.bpfEnabled, false);
  t.equal(CALICO_DEFAULTS.bpfKubeProxyHealthzPort, 10256);
  t.equal(CALICO_DEFAULTS.bpfMapSizeConntrack, 512000);
  t.same(CALICO_DEFAULTS.bpfConntrackTimeouts, { TCPSynSent: 20, TCPEstablished: 3600, TCPFinsSeen: 30, TCPResetSeen: 40, UDPTimeout: 60 });
});

t.test('node.<name> overrides default field by field', async (t) => {
  const r = effectiveConfig(
    CALICO_DEFAULTS,
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
    bpfEnabled: true,
    bpfKubeProxyMinSyncPeriod: 500,
    bpfDataIfacePattern: '^ens.*',
    bpfLogLevel: 'Debug',
    bpfConntrackTimeouts: { TCPEstablished: 7200, TCPFinsSeen: 30 },
  });
});

t.test('every invalid field is named; the config is refused whole', async (t) => {
  const r = effectiveConfig(
    CALICO_DEFAULTS,
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
    CALICO_DEFAULTS,
    { bpfPSNATPorts: '20000:29999', bpfFancyNewThing: 1, logSeverityScreen: 'Info' },
    undefined,
    'n1',
  );
  t.same(r.ignored, ['bpfPSNATPorts (not supported by bpfproxy yet)', 'bpfFancyNewThing (unknown)']);
  t.ok(r.config);
});

t.test('unsupported modes are said plainly', async (t) => {
  t.match(unsupported({ ...CALICO_DEFAULTS, bpfExternalServiceMode: 'DSR' })[0], /DSR is not supported yet.*SNAT/);
});
