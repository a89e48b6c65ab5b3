/**
 * The agent's bpfproxy.io/decap annotation on its Node (src/agent/
 * decap-announce.ts): set, removed, retried after a failure (RBAC without
 * patch on nodes), the last wish winning over a write in flight.
 */
import t from 'tap';
import { DecapAnnouncer, decapValue, kernelDecaps6 } from '../src/agent/decap-announce.js';
import { DECAP_ANNOTATION } from '../src/model/tunnel.js';
import { captureLogger } from './helpers/log.js';

t.test('set, remove, retry, last wish wins', async (t) => {
  const writes: Array<string | null> = [];
  let failures = 0;
  const { log, lines } = captureLogger();
  const a = new DecapAnnouncer(
    async (node, ann) => {
      t.equal(node, 'n1');
      await new Promise((r) => setTimeout(r, 5));
      if (failures > 0) {
        failures--;
        throw new Error('nodes "n1" is forbidden');
      }
      writes.push(ann[DECAP_ANNOTATION] ?? null);
    },
    'n1',
    log,
    30,
    'vxlan-v1',
  );
  t.teardown(() => a.stop());
  a.set(true);
  await a.settled();
  t.same(writes, ['vxlan-v1'], 'set');
  a.set(true);
  await a.settled();
  t.same(writes, ['vxlan-v1'], 'the same again: no write');
  failures = 2;
  a.set(false);
  await a.settled();
  t.same(writes, ['vxlan-v1', null], 'removed after two failed tries');
  const warned = lines.filter((l) => l.level === 'warn');
  t.equal(warned.length, 2, 'each failure logged');
  t.match(
    warned[0]!.msg,
    /bpfproxy\.io\/decap on Node n1 .*manifests\/rbac\.yaml.*retrying/,
    'naming the annotation, the node, RBAC and what happens next',
  );
  a.set(true);
  a.set(false);
  a.set(true);
  await a.settled();
  t.same(writes.at(-1), 'vxlan-v1', 'the last wish is what stays written');
});

t.test('IPv6 decapsulation is announced where the kernel has BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (6.3)', async (t) => {
  t.same(
    ['5.15.0-1075-azure', '6.1.112-124.190.amzn2023.x86_64', '6.2.16', '6.3.0', '6.8.0-45-generic', '7.0.1', 'weird'].map((r) =>
      kernelDecaps6(r),
    ),
    [false, false, false, true, true, true, false],
  );
  t.equal(decapValue(false), 'vxlan-v1', 'older kernels: IPv4 services only');
  t.equal(decapValue(true), 'vxlan-v1,vxlan-v1-ipv6', 'newer: both');
});
