/**
 * The engine's runtime refuses, before touching anything, what it cannot
 * serve: no interface matching the pattern, or an interface whose MTU does
 * not fit the engine's 2 KiB frames (a bigger frame would be dropped after
 * the XDP redirect instead of going to the kernel path). The agent logs it
 * and the BPF path serves alone.
 */
import t from 'tap';
import { ip } from '../testkit/netns.js';
import { AfxdpRuntime, ENGINE_MAX_MTU } from '../src/dataplane/afxdp/runtime.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { DEFAULT_ENGINE_SETTINGS } from '../src/config/engine.js';
import type { MapHandle } from '../src/native/index.js';
import { FakeClock } from '../testkit/fake-clock.js';
import { BPF_DIR, inNetns, tmpNetns } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';

t.test('no interface to serve, or one with too large an MTU: refused with the reason', async (t) => {
  const ns = tmpNetns(t, 'bpxer');
  ip(ns, 'link', 'add', 'x0', 'type', 'veth', 'peer', 'name', 'x1');
  ip(ns, 'link', 'set', 'x0', 'mtu', '9000');
  const start = (pattern: RegExp) =>
    inNetns(ns, () =>
      AfxdpRuntime.start({
        bpfDir: BPF_DIR,
        pinDir: '/sys/fs/bpf/bpxer-never-used',
        settings: { ...DEFAULT_ENGINE_SETTINGS, dataplane: 'afxdp', ifaces: pattern },
        uplinks: /^eth/,
        podIfaces: /^cali/,
        config: DEFAULT_CONFIG,
        conntrack: -1 as unknown as MapHandle,
        nodeAddresses: () => [],
        log: captureLogger().log,
        clock: new FakeClock(),
      }),
    );
  await t.rejects(start(/^nothing$/), /no interface matches --afxdp-ifaces \/\^nothing\$\/: .*the BPF path serves alone/);
  await t.rejects(
    start(/^x0$/),
    new RegExp(`x0 \\(MTU 9000\\): the engine's 2 KiB frames hold at most ${ENGINE_MAX_MTU} bytes of IP packet; lower the MTU`),
  );
});
